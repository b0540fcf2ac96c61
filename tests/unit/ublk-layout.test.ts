// Pins the ublk UAPI mirror to include/uapi/linux/ublk_cmd.h (Linux 6.12), as listed in uapi.md.
import t from 'tap';
import * as U from '../../ublk/uapi.js';

t.test('ublksrv_ctrl_cmd is 32 bytes with the header offsets', async (t) => {
  t.same(U.ublksrv_ctrl_cmd, { SIZE: 32, dev_id: 0, queue_id: 4, len: 6, addr: 8, data: 16, dev_path_len: 24, pad: 26, reserved: 28 });
});

t.test('ublksrv_ctrl_dev_info is 64 bytes with the header offsets', async (t) => {
  const I = U.ublksrv_ctrl_dev_info;
  t.equal(I.SIZE, 64);
  t.same(
    [I.nr_hw_queues, I.queue_depth, I.state, I.max_io_buf_bytes, I.dev_id, I.ublksrv_pid, I.flags, I.ublksrv_flags, I.owner_uid, I.owner_gid],
    [0, 2, 4, 8, 12, 16, 24, 32, 40, 44],
  );
});

t.test('ublk_params is 112 bytes: basic @8 (32), discard @40 (20), devt @60 (16), zoned @76', async (t) => {
  t.same(U.ublk_params, { SIZE: 112, len: 0, types: 4, basic: 8, discard: 40, devt: 60, zoned: 76 });
  t.equal(U.ublk_params.discard - U.ublk_params.basic, U.ublk_param_basic.SIZE);
  t.equal(U.ublk_params.devt - U.ublk_params.discard, U.ublk_param_discard.SIZE);
  t.equal(U.ublk_params.zoned - U.ublk_params.devt, U.ublk_param_devt.SIZE);
  const B = U.ublk_param_basic;
  t.same([B.attrs, B.logical_bs_shift, B.physical_bs_shift, B.io_opt_shift, B.io_min_shift, B.max_sectors, B.chunk_sectors, B.dev_sectors, B.virt_boundary_mask], [0, 4, 5, 6, 7, 8, 12, 16, 24]);
  const D = U.ublk_param_discard;
  t.same([D.discard_alignment, D.discard_granularity, D.max_discard_sectors, D.max_write_zeroes_sectors, D.max_discard_segments, D.reserved0], [0, 4, 8, 12, 16, 18]);
});

t.test('ublksrv_io_desc is 24 bytes and ublksrv_io_cmd 16', async (t) => {
  t.same(U.ublksrv_io_desc, { SIZE: 24, op_flags: 0, nr_sectors: 4, start_sector: 8, addr: 16 });
  t.same(U.ublksrv_io_cmd, { SIZE: 16, q_id: 0, tag: 2, result: 4, addr: 8 });
});

t.test('opcodes are the ioctl encodings of the header', async (t) => {
  // _IOWR('u', nr, struct ublksrv_ctrl_cmd) = 0xc0000000 | 32 << 16 | 'u' << 8 | nr
  const iowr = (nr: number, size: number) => (0xc0000000 | (size << 16) | (0x75 << 8) | nr) >>> 0;
  const ior = (nr: number, size: number) => (0x80000000 | (size << 16) | (0x75 << 8) | nr) >>> 0;
  t.equal(U.UBLK_U_CMD_ADD_DEV, iowr(0x04, 32));
  t.equal(U.UBLK_U_CMD_DEL_DEV, iowr(0x05, 32));
  t.equal(U.UBLK_U_CMD_START_DEV, iowr(0x06, 32));
  t.equal(U.UBLK_U_CMD_STOP_DEV, iowr(0x07, 32));
  t.equal(U.UBLK_U_CMD_SET_PARAMS, iowr(0x08, 32));
  t.equal(U.UBLK_U_CMD_GET_PARAMS, ior(0x09, 32));
  t.equal(U.UBLK_U_CMD_GET_DEV_INFO, ior(0x02, 32));
  t.equal(U.UBLK_U_CMD_START_USER_RECOVERY, iowr(0x10, 32));
  t.equal(U.UBLK_U_CMD_END_USER_RECOVERY, iowr(0x11, 32));
  t.equal(U.UBLK_U_CMD_GET_FEATURES, ior(0x13, 32));
  t.equal(U.UBLK_U_IO_FETCH_REQ, iowr(0x20, 16));
  t.equal(U.UBLK_U_IO_COMMIT_AND_FETCH_REQ, iowr(0x21, 16));
});

t.test('queue q descriptors live at q * round_up(4096 * 24, page)', async (t) => {
  t.equal(U.descOffset(0), 0);
  t.equal(U.descOffset(1), 98304);
  t.equal(U.descOffset(3), 3 * 98304);
});

t.test('any ublksrv_io_desc decodes to the op, flags, offset and length it holds', async (t) => {
  const fc = (await import('fast-check')).default;
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 4095 }),
      fc.integer({ min: 0, max: 255 }),
      fc.integer({ min: 0, max: 0xffffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 2 ** 44 - 1 }),
      (tag, op, flagBits, nrSectors, startSector) => {
        const desc = new Uint32Array(4096 * 6);
        const dv = new DataView(desc.buffer);
        const base = tag * U.ublksrv_io_desc.SIZE;
        dv.setUint32(base + U.ublksrv_io_desc.op_flags, (op | (flagBits << 8)) >>> 0, true);
        dv.setUint32(base + U.ublksrv_io_desc.nr_sectors, nrSectors, true);
        dv.setBigUint64(base + U.ublksrv_io_desc.start_sector, BigInt(startSector), true);
        dv.setBigUint64(base + U.ublksrv_io_desc.addr, 0xdeadbeefn, true);
        return (
          U.iodOp(desc, tag) === op &&
          U.iodFlags(desc, tag) >>> 0 === (flagBits << 8) >>> 0 &&
          U.iodLength(desc, tag) === nrSectors * 512 &&
          U.iodOffset(desc, tag) === startSector * 512
        );
      },
    ),
    { numRuns: 500 },
  );
  t.pass('500 random descriptors decoded');
});
