/**
 * One queue of the rbd target (in the queue's worker thread). Requests go
 * to librbd's aio calls on the device's one image handle; librbd signals
 * finished ones on the device's eventfd, which the queue waits on with its
 * ublk commands, and rbd_poll_io_events() hands them over without a JS
 * callback from librbd's threads. A completion carries (queue, tag): a
 * request another queue found goes to its owner through the mailbox.
 * Every signal of the eventfd is for any queue's requests, so it is marked
 * shared: a queue polls it only while it has requests in librbd.
 */
import { EventFd } from '../../sys/eventfd.js';
import { EBADF, EIO, EOPNOTSUPP } from '../../sys/errno.js';
import { RbdIo } from '../../sys/rbd.js';
import {
  UBLK_IO_OP_DISCARD,
  UBLK_IO_OP_FLUSH,
  UBLK_IO_OP_READ,
  UBLK_IO_OP_WRITE,
  UBLK_IO_OP_WRITE_ZEROES,
} from '../../sys/ublk/io.js';
import type { QueueContext, TargetQueue } from '../target.js';
import { Mailbox } from './mailbox.js';

/** What every queue gets from the daemon's open() (see index.ts). */
export interface RbdQueueData {
  /** rbd_image_t, shared by the device's queues (librbd is thread-safe). */
  image: number;
  /** The eventfd librbd signals (rbd_set_image_notification). */
  eventFd: number;
  mailbox: SharedArrayBuffer;
  mailboxQueues: number;
  readOnly: boolean;
  /** How long the queue's close() waits for requests librbd still holds: the OSD op timeout, and a margin. */
  drainMs: number;
}

/** RS: the queue's counters in its statsBuffer (Float64Array indices). */
export const RS = { ios: 0, errors: 1, latencySumUs: 2, latencyMaxUs: 3, SIZE: 4 } as const;

/** Completions taken from librbd per rbd_poll_io_events call. */
const POLL_BATCH = 64;
/** A completion's argument: queue << TAG_BITS | tag (tags are below UBLK_MAX_QUEUE_DEPTH). */
const TAG_BITS = 16;

export class RbdQueue implements TargetQueue {
  readonly eventFd: number;
  readonly eventFdShared = true;
  readonly statsBuffer = new SharedArrayBuffer(RS.SIZE * 8);
  private readonly stats = new Float64Array(this.statsBuffer);
  private readonly ctx: QueueContext;
  private readonly io: RbdIo;
  private readonly mailbox: Mailbox;
  private readonly readOnly: boolean;
  private readonly drainMs: number;
  private readonly argBase: number;
  /** Wakes the owners of requests this queue found (the same eventfd, which a queue with requests in librbd polls). */
  private readonly kick: EventFd;
  /** performance.now() when each tag went to librbd. */
  private readonly started: Float64Array;
  /** Each tag's WRITE length (0 for other requests): librbd completes a write with 0, not its bytes. */
  private readonly writeLength: Float64Array;
  private pending = 0;
  /** The queue has ended: requests librbd finishes now were failed already. */
  private closing = false;

  constructor(ctx: QueueContext, data: RbdQueueData) {
    this.ctx = ctx;
    this.eventFd = data.eventFd;
    this.io = new RbdIo(data.image, POLL_BATCH);
    this.mailbox = new Mailbox(data.mailbox, data.mailboxQueues, ctx.qId);
    this.readOnly = data.readOnly;
    this.drainMs = data.drainMs;
    this.argBase = ctx.qId * 2 ** TAG_BITS;
    this.kick = new EventFd(0, data.eventFd);
    this.started = new Float64Array(ctx.depth);
    this.writeLength = new Float64Array(ctx.depth);
  }

  queueIo(tag: number, op: number, _flags: number, offset: number, length: number): number | undefined {
    if (op !== UBLK_IO_OP_READ && op !== UBLK_IO_OP_FLUSH) {
      if (op !== UBLK_IO_OP_WRITE && op !== UBLK_IO_OP_DISCARD && op !== UBLK_IO_OP_WRITE_ZEROES) return -EOPNOTSUPP;
      if (this.readOnly) return -EBADF;
    }
    const io = this.io;
    const comp = io.completion(this.argBase + tag);
    if (comp < 0) return -EIO;
    let r: number;
    switch (op) {
      case UBLK_IO_OP_READ:
        r = io.read(offset, length, this.ctx.bufferAddr(tag), comp);
        break;
      case UBLK_IO_OP_WRITE:
        // No FUA in librbd: the device says so, and the kernel follows a FUA write with a FLUSH.
        r = io.write(offset, length, this.ctx.bufferAddr(tag), comp);
        break;
      case UBLK_IO_OP_FLUSH:
        r = io.flush(comp);
        break;
      case UBLK_IO_OP_DISCARD:
        r = io.discard(offset, length, comp);
        break;
      default:
        r = io.writeZeroes(offset, length, comp);
    }
    if (r < 0) {
      // librbd refused the request up front: the completion will never fire.
      io.release(comp);
      this.stats[RS.errors]++;
      return -EIO;
    }
    this.started[tag] = performance.now();
    this.writeLength[tag] = op === UBLK_IO_OP_WRITE ? length : 0;
    this.pending++;
    return undefined;
  }

  reap(): void {
    const io = this.io;
    let forwarded = false;
    for (;;) {
      const n = io.poll();
      for (let i = 0; i < n; i++) {
        const comp = io.event(i);
        const arg = io.arg(comp);
        const res = io.returnValue(comp);
        io.release(comp);
        const q = Math.floor(arg / 2 ** TAG_BITS);
        const tag = arg - q * 2 ** TAG_BITS;
        if (q === this.ctx.qId) this.done(tag, res);
        else {
          this.mailbox.post(q, tag, res);
          forwarded = true;
        }
      }
      if (n < POLL_BATCH) break;
    }
    const mb = this.mailbox;
    while (mb.ready()) {
      const tag = mb.tag();
      const res = mb.res();
      mb.next();
      this.done(tag, res);
    }
    // The owners may be asleep on the eventfd already: signal it once more.
    if (forwarded) this.kick.signal();
  }

  private done(tag: number, res: number): void {
    this.pending--;
    const us = (performance.now() - this.started[tag]) * 1000;
    const s = this.stats;
    s[RS.ios]++;
    s[RS.latencySumUs] += us;
    if (us > s[RS.latencyMaxUs]) s[RS.latencyMaxUs] = us;
    if (this.closing) return;
    if (res < 0) {
      // Whatever the cluster said (ETIMEDOUT, EBLOCKLISTED …), the block layer knows EIO.
      s[RS.errors]++;
      res = -EIO;
    } else if (this.writeLength[tag] > 0) res = this.writeLength[tag];
    this.ctx.complete(tag, res);
  }

  hasCompletions(): boolean {
    return this.mailbox.ready();
  }

  inFlight(): number {
    return this.pending;
  }

  close(): void {
    // librbd still writes into the buffers of requests it holds: wait for
    // them (the OSD op timeout bounds it) before the queue frees the buffers.
    this.closing = true;
    const until = performance.now() + this.drainMs;
    const nap = new Int32Array(new SharedArrayBuffer(4));
    while (this.pending > 0 && performance.now() < until) {
      this.reap();
      if (this.pending > 0) Atomics.wait(nap, 0, 0, 1);
    }
  }
}
