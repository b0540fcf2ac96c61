/**
 * One queue of the loop target (in the queue's worker thread): design.md
 * "One request, end to end", steps 3–7. READ/WRITE/FLUSH go to kernel AIO
 * (engine 'aio', reaped from the aio_ring in userspace) or to the queue's
 * io_uring (engine 'uring'); DISCARD and WRITE_ZEROES are fallocate() on the
 * queue ring, which kernel AIO cannot do, so a queue never blocks on them.
 */
import { AioEngine } from '../../aio/engine.js';
import { RWF_DSYNC } from '../../aio/iocb.js';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE } from '../../sys/file.js';
import { IORING_FSYNC_DATASYNC } from '../../sys/uring/constants.js';
import { prepFallocate, prepFsync, prepRead, prepWrite, sqeSetData } from '../../sys/uring/prep.js';
import {
  UBLK_IO_F_FUA,
  UBLK_IO_F_NOUNMAP,
  UBLK_IO_OP_DISCARD,
  UBLK_IO_OP_FLUSH,
  UBLK_IO_OP_READ,
  UBLK_IO_OP_WRITE,
  UBLK_IO_OP_WRITE_ZEROES,
} from '../../sys/ublk/io.js';
import { USER_DATA_TARGET, userDataHi } from '../../sys/uring/user-data.js';
import type { QueueContext, TargetQueue } from '../target.js';
import { EBADF, EOPNOTSUPP } from '../../sys/errno.js';


/** What every queue gets from the daemon's open() (see index.ts). */
export interface LoopQueueData {
  fd: number;
  engine: 'aio' | 'uring';
  readOnly: boolean;
}

/** Kinds of SQE the loop target puts on the queue ring, as user_data high words (sys/uring/user-data.ts). */
const RW = 0;
const FALLOCATE = 1;
const RW_HI = userDataHi(USER_DATA_TARGET, RW);
const FALLOCATE_HI = userDataHi(USER_DATA_TARGET, FALLOCATE);

export class LoopQueue implements TargetQueue {
  readonly eventFd?: number;
  readonly statsBuffer?: SharedArrayBuffer;
  private readonly ctx: QueueContext;
  private readonly fd: number;
  private readonly readOnly: boolean;
  private readonly aio: AioEngine | null;
  /** SQEs of this target on the queue ring, not yet completed. */
  private ringInFlight = 0;
  /** FALLOC_FL_ZERO_RANGE works on the backing (until it says EOPNOTSUPP). */
  private zeroRange = true;
  // Each tag's fallocate, to issue it again another way.
  private readonly fallocMode: Uint8Array;
  private readonly fallocOffset: Float64Array;
  private readonly fallocLength: Float64Array;

  constructor(ctx: QueueContext, data: LoopQueueData) {
    this.ctx = ctx;
    this.fd = data.fd;
    this.readOnly = data.readOnly;
    this.fallocMode = new Uint8Array(ctx.depth);
    this.fallocOffset = new Float64Array(ctx.depth);
    this.fallocLength = new Float64Array(ctx.depth);
    if (data.engine === 'aio') {
      // The queue's own poller spins on both rings; the engine never polls.
      this.aio = new AioEngine({ depth: ctx.depth }, (tag, res) => ctx.complete(tag, res));
      this.eventFd = this.aio.eventFd;
      this.statsBuffer = this.aio.stats.buffer;
    } else {
      this.aio = null;
    }
  }

  queueIo(tag: number, op: number, flags: number, offset: number, length: number): number | undefined {
    const addr = this.ctx.bufferAddr(tag);
    switch (op) {
      case UBLK_IO_OP_READ:
        if (this.aio !== null) this.aio.read(tag, this.fd, addr, length, offset);
        else this.ringRw(tag, true, addr, length, offset, 0);
        return undefined;
      case UBLK_IO_OP_WRITE: {
        if (this.readOnly) return -EBADF;
        // FUA: this write must be on stable storage when it completes.
        const rwFlags = flags & UBLK_IO_F_FUA ? RWF_DSYNC : 0;
        if (this.aio !== null) this.aio.write(tag, this.fd, addr, length, offset, rwFlags);
        else this.ringRw(tag, false, addr, length, offset, rwFlags);
        return undefined;
      }
      case UBLK_IO_OP_FLUSH:
        if (this.aio !== null) this.aio.fdsync(tag, this.fd);
        else this.ringFsync(tag);
        return undefined;
      case UBLK_IO_OP_DISCARD:
        this.ringFallocate(tag, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
        return undefined;
      case UBLK_IO_OP_WRITE_ZEROES:
        // NOUNMAP: the blocks should stay allocated; otherwise a hole reads as zeros too.
        this.ringFallocate(tag, (flags & UBLK_IO_F_NOUNMAP && this.zeroRange ? FALLOC_FL_ZERO_RANGE : FALLOC_FL_PUNCH_HOLE) | FALLOC_FL_KEEP_SIZE, offset, length);
        return undefined;
      default:
        return -EOPNOTSUPP;
    }
  }

  private ringRw(tag: number, read: boolean, addr: number, length: number, offset: number, rwFlags: number): void {
    const ring = this.ctx.ring;
    const sqe = this.ctx.getSqe();
    if (read) prepRead(ring, sqe, this.fd, addr, length, offset);
    else prepWrite(ring, sqe, this.fd, addr, length, offset, rwFlags);
    sqeSetData(ring, sqe, tag, RW_HI);
    this.ringInFlight++;
  }

  private ringFsync(tag: number): void {
    const ring = this.ctx.ring;
    const sqe = this.ctx.getSqe();
    prepFsync(ring, sqe, this.fd, IORING_FSYNC_DATASYNC);
    sqeSetData(ring, sqe, tag, RW_HI);
    this.ringInFlight++;
  }

  private ringFallocate(tag: number, mode: number, offset: number, length: number): void {
    this.fallocMode[tag] = mode;
    this.fallocOffset[tag] = offset;
    this.fallocLength[tag] = length;
    const ring = this.ctx.ring;
    const sqe = this.ctx.getSqe();
    prepFallocate(ring, sqe, this.fd, mode, offset, length);
    sqeSetData(ring, sqe, tag, FALLOCATE_HI);
    this.ringInFlight++;
  }

  onCqe(tag: number, kind: number, res: number): void {
    this.ringInFlight--;
    if (kind === FALLOCATE && res === -EOPNOTSUPP && this.fallocMode[tag] & FALLOC_FL_ZERO_RANGE) {
      // tmpfs and some other filesystems punch holes but cannot zero a range
      // in place: zeros are what was asked for, so punch from now on.
      this.zeroRange = false;
      this.ringFallocate(tag, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, this.fallocOffset[tag], this.fallocLength[tag]);
      return;
    }
    // A short read or write is the dispatcher's to settle (ublk/queue.ts complete()).
    this.ctx.complete(tag, res);
  }

  flush(): void {
    this.aio?.flush();
  }

  reap(): void {
    this.aio?.reap();
  }

  hasCompletions(): boolean {
    return this.aio !== null && this.aio.hasCompletions();
  }

  inFlight(): number {
    return this.ringInFlight + (this.aio !== null ? this.aio.inFlight + this.aio.queued : 0);
  }

  close(): void {
    // io_destroy waits for IO still in flight, so no AIO writes into freed buffers.
    this.aio?.destroy();
  }
}
