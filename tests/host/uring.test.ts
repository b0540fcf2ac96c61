// Our io_uring against the real kernel.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as file from '../../sys/file.js';
import { NativeMemory } from '../../sys/memory.js';
import { EventFd } from '../../sys/eventfd.js';
import {
  IORING_CQE_F_MORE,
  IORING_FSYNC_DATASYNC,
  IORING_SETUP_COOP_TASKRUN,
  IORING_SETUP_SQE128,
  IORING_SETUP_TASKRUN_FLAG,
  IOSQE_FIXED_FILE,
  POLLIN,
} from '../../sys/uring/constants.js';
import { prepFallocate, prepFsync, prepMsgRing, prepNop, prepPollMultishot, prepRead, prepWrite, sqeSetData, sqeSetFlags } from '../../sys/uring/prep.js';
import { IoUring } from '../../sys/uring/ring.js';

const dir = mkdtempSync(join(tmpdir(), 'ublk-uring-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function drain(ring: IoUring): { lo: number; hi: number; res: number }[] {
  const out = [];
  const n = ring.cqReady();
  for (let i = 0; i < n; i++) out.push({ lo: ring.cqeDataLo(i), hi: ring.cqeDataHi(i), res: ring.cqeRes(i) });
  ring.cqAdvance(n);
  return out;
}

t.test('NOPs come back with their user_data, many times around the ring', async (t) => {
  const ring = new IoUring(8, { flags: IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG });
  t.teardown(() => ring.close());
  t.equal(ring.sqEntries, 8);
  const seen: number[] = [];
  for (let round = 0; round < 100; round++) {
    for (let i = 0; i < 5; i++) {
      const sqe = ring.getSqe();
      prepNop(ring, sqe);
      sqeSetData(ring, sqe, round * 5 + i, 0x80000001);
    }
    t.equal(ring.submitAndWait(5), 5);
    for (const c of drain(ring)) {
      if (c.hi !== 0x80000001 || c.res !== 0) t.fail(`bad cqe ${JSON.stringify(c)}`);
      seen.push(c.lo);
    }
  }
  t.same(seen, Array.from({ length: 500 }, (_, i) => i), 'every NOP once, in order');
});

t.test('getSqe says -1 when the SQ is full, and submit makes room', async (t) => {
  const ring = new IoUring(4);
  t.teardown(() => ring.close());
  for (let i = 0; i < 4; i++) prepNop(ring, ring.getSqe());
  t.equal(ring.getSqe(), -1);
  t.equal(ring.submit(), 4);
  t.not(ring.getSqe(), -1);
});

t.test('write, fsync, read and fallocate on a file', async (t) => {
  const path = join(dir, 'f');
  writeFileSync(path, Buffer.alloc(1 << 16, 0x55));
  const fd = file.open(path, file.O_RDWR);
  const mem = NativeMemory.aligned(8192);
  const ring = new IoUring(16);
  t.teardown(() => {
    ring.close();
    mem.free();
    file.close(fd);
  });
  const u8 = new Uint8Array(mem.buffer);
  for (let i = 0; i < 4096; i++) u8[i] = i & 0xff;
  let sqe = ring.getSqe();
  prepWrite(ring, sqe, fd, mem.addr, 4096, 8192);
  sqeSetData(ring, sqe, 1, 0);
  ring.submitAndWait(1);
  t.same(drain(ring), [{ lo: 1, hi: 0, res: 4096 }]);
  sqe = ring.getSqe();
  prepFsync(ring, sqe, fd, IORING_FSYNC_DATASYNC);
  sqeSetData(ring, sqe, 2, 0);
  ring.submitAndWait(1);
  t.same(drain(ring), [{ lo: 2, hi: 0, res: 0 }]);
  sqe = ring.getSqe();
  prepRead(ring, sqe, fd, mem.addr + 4096, 4096, 8192);
  sqeSetData(ring, sqe, 3, 0);
  ring.submitAndWait(1);
  t.same(drain(ring), [{ lo: 3, hi: 0, res: 4096 }]);
  t.same(u8.subarray(4096, 8192), u8.subarray(0, 4096));
  sqe = ring.getSqe();
  prepFallocate(ring, sqe, fd, file.FALLOC_FL_PUNCH_HOLE | file.FALLOC_FL_KEEP_SIZE, 8192, 4096);
  sqeSetData(ring, sqe, 4, 0);
  ring.submitAndWait(1);
  t.same(drain(ring), [{ lo: 4, hi: 0, res: 0 }]);
  const after = readFileSync(path);
  t.ok(after.subarray(8192, 12288).every((b) => b === 0), 'the punched range reads as zeros');
  t.equal(after.length, 1 << 16);
});

t.test('a read of a bad fd completes with -EBADF', async (t) => {
  const ring = new IoUring(4);
  t.teardown(() => ring.close());
  const sqe = ring.getSqe();
  prepRead(ring, sqe, 987654, 0, 8, 0);
  sqeSetData(ring, sqe, 9, 0);
  ring.submitAndWait(1);
  t.same(drain(ring), [{ lo: 9, hi: 0, res: -9 }]);
});

t.test('a registered file is read through its fixed-file index', async (t) => {
  const path = join(dir, 'fixed');
  writeFileSync(path, Buffer.alloc(4096, 0x6b));
  const fd = file.open(path, file.O_RDONLY);
  const mem = NativeMemory.aligned(4096);
  const ring = new IoUring(4);
  t.teardown(() => {
    ring.close();
    mem.free();
    file.close(fd);
  });
  ring.registerFiles([fd]);
  const sqe = ring.getSqe();
  prepRead(ring, sqe, 0, mem.addr, 4096, 0);
  sqeSetFlags(ring, sqe, IOSQE_FIXED_FILE);
  sqeSetData(ring, sqe, 5, 0);
  ring.submitAndWait(1);
  t.same(drain(ring), [{ lo: 5, hi: 0, res: 4096 }]);
  t.ok(new Uint8Array(mem.buffer).every((b) => b === 0x6b), "the file's bytes");
  t.throws(() => ring.registerFiles([fd]), { code: 'EBUSY' }, 'a second table is refused');
});

t.test('a multishot poll posts a CQE per signal of an eventfd nobody reads, and stays armed', async (t) => {
  const efd = new EventFd();
  const ring = new IoUring(8);
  t.teardown(() => {
    ring.close();
    efd.close();
  });
  const sqe = ring.getSqe();
  prepPollMultishot(ring, sqe, efd.fd, POLLIN);
  sqeSetData(ring, sqe, 7, 0);
  ring.submit();
  t.equal(ring.cqReady(), 0, 'nothing before the first signal');
  for (let i = 0; i < 3; i++) {
    efd.signal();
    ring.submitAndWait(1);
    const n = ring.cqReady();
    t.equal(n, 1, `signal ${i + 1}: one CQE`);
    t.equal(ring.cqeDataLo(0), 7);
    t.equal(ring.cqeRes(0) & POLLIN, POLLIN, 'readable');
    t.ok(ring.cqeFlags(0) & IORING_CQE_F_MORE, 'F_MORE: still armed');
    ring.cqAdvance(n);
  }
  t.equal(efd.drain(), 3, 'the counter was never read');
});

t.test('SQE128 rings hand out 128-byte entries', async (t) => {
  const ring = new IoUring(4, { flags: IORING_SETUP_SQE128 });
  t.teardown(() => ring.close());
  t.equal(ring.sqeSize, 128);
  prepNop(ring, ring.getSqe());
  t.equal(ring.submitAndWait(1), 1);
  t.equal(drain(ring).length, 1);
});

t.test('MSG_RING posts a CQE with any user_data and result on another ring', async (t) => {
  const from = new IoUring(4);
  const to = new IoUring(4);
  t.teardown(() => {
    from.close();
    to.close();
  });
  const sqe = from.getSqe();
  prepMsgRing(from, sqe, to.fd, -19, 7, 0x40000001);
  t.equal(from.submitAndWait(1), 1);
  t.same(drain(from), [{ lo: 0, hi: 0, res: 0 }], 'the sender gets its own completion');
  t.same(drain(to), [{ lo: 7, hi: 0x40000001, res: -19 }]);
});
