/**
 * The mem target: a RAM disk, and the smallest complete target — read this
 * one to write your own. `open` runs once in the daemon; `createQueue` in
 * every queue's worker thread, so state shared by the queues must be
 * shareable: here one SharedArrayBuffer holds the disk.
 */
import { parseSize } from './size.js';
import { type Target, TargetError } from './target.js';
import { UBLK_IO_OP_DISCARD, UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE, UBLK_IO_OP_WRITE_ZEROES } from '../sys/ublk/io.js';
import { EOPNOTSUPP } from '../sys/errno.js';

export interface MemOptions {
  /** Bytes, or a size string such as '256M'. */
  size: number | string;
}


const mem: Target<MemOptions> = {
  name: 'mem',
  // queueIo always answers at once, so the queue thread may block in the kernel between batches.
  sync: true,
  open(options) {
    if (options.size === undefined) throw new TargetError('the mem target needs a size (-s SIZE)');
    const size = parseSize(options.size);
    if (size > 2 ** 32) throw new TargetError('the mem target holds at most 4 GiB');
    return {
      size,
      // Discard and write-zeroes clear RAM; no limits beyond one request.
      discard: { granularity: 4096, maxDiscardSectors: 1 << 16, maxWriteZeroesSectors: 1 << 16 },
      info: {},
      queueData: new SharedArrayBuffer(size),
    };
  },
  createQueue(ctx, queueData) {
    const disk = new Uint8Array(queueData as SharedArrayBuffer);
    return {
      // Returns bytes done (or -errno): the request completes at once.
      queueIo(tag, op, _flags, offset, length) {
        const buf = ctx.buffer(tag); // what the kernel wrote, or where it reads from
        switch (op) {
          case UBLK_IO_OP_READ:
            buf.set(disk.subarray(offset, offset + length));
            return length;
          case UBLK_IO_OP_WRITE:
            disk.set(buf.subarray(0, length), offset);
            return length;
          case UBLK_IO_OP_FLUSH:
            return 0; // RAM has no cache to flush
          case UBLK_IO_OP_DISCARD:
          case UBLK_IO_OP_WRITE_ZEROES:
            disk.fill(0, offset, offset + length);
            return 0;
          default:
            return -EOPNOTSUPP;
        }
      },
    };
  },
};

export default mem;
