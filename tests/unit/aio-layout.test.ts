// Pins the kernel AIO layouts against include/uapi/linux/aio_abi.h and
// struct aio_ring in fs/aio.c (numbers from shared/uapi.md): a wrong offset
// here would send the kernel a garbage iocb or misread every completion.
import t from 'tap';
import {
  AIO_RING_MAGIC,
  IOCB_CMD_FDSYNC,
  IOCB_CMD_FSYNC,
  IOCB_CMD_NOOP,
  IOCB_CMD_POLL,
  IOCB_CMD_PREAD,
  IOCB_CMD_PREADV,
  IOCB_CMD_PWRITE,
  IOCB_CMD_PWRITEV,
  IOCB_FLAG_IOPRIO,
  IOCB_FLAG_RESFD,
  RWF_DSYNC,
  RWF_HIPRI,
  RWF_NOWAIT,
  RWF_SYNC,
  aio_ring,
  io_event,
  iocb,
} from '../../aio/iocb.js';
import { ringUsable } from '../../aio/ring.js';

t.test('1 struct iocb is 64 bytes with the uapi offsets', async (t) => {
  t.same(
    { ...iocb },
    {
      SIZE: 64,
      aio_data: 0,
      aio_key: 8,
      aio_rw_flags: 12,
      aio_lio_opcode: 16,
      aio_reqprio: 18,
      aio_fildes: 20,
      aio_buf: 24,
      aio_nbytes: 32,
      aio_offset: 40,
      aio_reserved2: 48,
      aio_flags: 56,
      aio_resfd: 60,
    },
  );
});

t.test('2 struct io_event is 32 bytes: data, obj, res, res2', async (t) => {
  t.same({ ...io_event }, { SIZE: 32, data: 0, obj: 8, res: 16, res2: 24 });
});

t.test('3 struct aio_ring header is 32 bytes and events follow it', async (t) => {
  t.same(
    { ...aio_ring },
    {
      SIZE: 32,
      id: 0,
      nr: 4,
      head: 8,
      tail: 12,
      magic: 16,
      compat_features: 20,
      incompat_features: 24,
      header_length: 28,
      io_events: 32,
    },
  );
  t.equal(AIO_RING_MAGIC, 0xa10a10a1);
});

t.test('4 opcodes and flags match aio_abi.h and fs.h', async (t) => {
  t.same(
    [IOCB_CMD_PREAD, IOCB_CMD_PWRITE, IOCB_CMD_FSYNC, IOCB_CMD_FDSYNC, IOCB_CMD_POLL, IOCB_CMD_NOOP, IOCB_CMD_PREADV, IOCB_CMD_PWRITEV],
    [0, 1, 2, 3, 5, 6, 7, 8],
  );
  t.same([IOCB_FLAG_RESFD, IOCB_FLAG_IOPRIO], [1, 2]);
  t.same([RWF_HIPRI, RWF_DSYNC, RWF_SYNC, RWF_NOWAIT], [1, 2, 4, 8]);
});

t.test('5 the userspace reaper only trusts a ring header it knows, else io_getevents', async (t) => {
  const good = { id: 0, nr: 383, head: 0, tail: 0, magic: AIO_RING_MAGIC, compat_features: 1, incompat_features: 0, header_length: 32 };
  t.equal(ringUsable(good), true, 'what io_setup(128) gives on 6.x');
  t.equal(ringUsable({ ...good, magic: 0 }), false, 'wrong magic');
  t.equal(ringUsable({ ...good, incompat_features: 1 }), false, 'a feature that changes the layout');
  t.equal(ringUsable({ ...good, header_length: 64 }), false, 'a longer header moves the events');
  t.equal(ringUsable({ ...good, nr: 0 }), false, 'no events');
});
