/**
 * AioEngine: one kernel AIO context (one per ublk queue), driven from one
 * thread. IOs are queued by tag into pre-built iocbs, sent in one io_submit
 * per batch (the plug; or in chunks of maxSubmit), and reaped from the
 * aio_ring in userspace right
 * after submitting (seeds 000, 001) or when the caller polls or waits
 * (seed 004). EAGAIN and partial submits keep IOs queued (seed 002). A
 * short read or write completes with the bytes the kernel did, as
 * pread(2) would.
 *
 * Hot path: no allocation per IO. Per-tag state lives in typed arrays and
 * the iocbs in native memory; onComplete(tag, res) is the only call out.
 */
import * as native from '../sys/native.js';
import { SysError } from '../sys/error.js';
import { EventFd } from '../sys/eventfd.js';
import { NativeMemory } from '../sys/memory.js';
import { IOCB_CMD_FDSYNC, IOCB_CMD_PREAD, IOCB_CMD_PWRITE, IocbTable, io_event } from './iocb.js';
import { Plug } from './plug.js';
import { AioRing, readRingHeader, ringUsable } from './ring.js';
import { AdaptivePoller } from '../sys/poller.js';
import { AioStats, Counter } from './stats.js';
import { EAGAIN, EINTR, EIO } from '../sys/errno.js';


/** Largest single IO: io_event.res is read as an i32. */
export const AIO_MAX_IO_BYTES = 0x7fffffff;

export interface AioEngineOptions {
  /** Tags 0..depth-1; at most one IO per tag at a time. */
  depth: number;
  /** Longest adaptive poll before blocking, in ns; 0 (the default) never polls. */
  pollMaxNs?: number;
  /** Reap from the mapped aio_ring (default) rather than with io_getevents. */
  userspaceReap?: boolean;
  /** Peek for completions right after every io_submit (default true, seed 000). */
  reapAfterSubmit?: boolean;
  /** Signal an eventfd on every completion (IOCB_FLAG_RESFD), default true. */
  useEventFd?: boolean;
  /** Where to count; a new AioStats by default. */
  stats?: AioStats;
  /**
   * nr_events for io_setup, default `depth`. A smaller context makes the
   * kernel answer io_submit with EAGAIN (tests do this on purpose).
   */
  nrEvents?: number;
  /**
   * Most iocbs per io_submit call; default: the whole plug in one call.
   * io_submit plugs the block layer for more than AIO_PLUG_THRESHOLD (2)
   * iocbs (fs/aio.c), so the device sees none until all are built; on a
   * virtio disk whose host serves requests as they are kicked, 2 keeps it
   * busy and gave ~20% more IOPS at QD32 (bench/aio).
   */
  maxSubmit?: number;
}

/** Called once per IO with its tag and the total bytes transferred, or -errno. */
export type AioCompletion = (tag: number, res: number) => void;

// Per-tag state.
const FREE = 0;
const QUEUED = 1; // in the plug
const IN_FLIGHT = 2; // accepted by io_submit, not yet reaped

export class AioEngine {
  readonly depth: number;
  /** The IOCB_FLAG_RESFD eventfd (non-blocking), or -1. Its counter grows by one per completion. */
  readonly eventFd: number;
  /** The ring's own number of io_events (0 when its header was not usable). */
  readonly ringEvents: number;
  /** Whether completions are reaped from the ring (false: io_getevents). */
  readonly userspaceReap: boolean;
  readonly reapAfterSubmit: boolean;
  readonly stats: AioStats;
  /** The poller behind poll()/wait(); a dispatcher with more sources may use its own. */
  readonly poller: AdaptivePoller;

  /** Most iocbs per io_submit call (see AioEngineOptions.maxSubmit). */
  readonly maxSubmit: number;

  private ctx: number;
  private readonly onComplete: AioCompletion;
  private readonly table: IocbTable;
  private readonly plug: Plug;
  /** null after destroy(): io_destroy unmaps the ring, and hasCompletions() must not read it then. */
  private ring: AioRing | null;
  private readonly efd: EventFd | null;
  private readonly state: Uint8Array;
  private nInFlight = 0;
  private reaping = false;
  /** io_submit said EAGAIN and no completion has been consumed since. */
  private eagain = false;
  // The batch being dispatched: copied out of the ring (or io_getevents'
  // array) before the callbacks run, so a callback may submit and flush.
  private readonly evTags: Int32Array;
  private readonly evRes: Int32Array;
  private batchPos = 0;
  private batchLen = 0;
  /** io_getevents' struct io_event[] and a zero struct timespec. */
  private readonly events: NativeMemory;
  private readonly ev32: Int32Array;
  private readonly zeroTimeout: number;
  private readonly probe: () => boolean;

  constructor(opts: AioEngineOptions, onComplete: AioCompletion) {
    const depth = opts.depth;
    if (!Number.isInteger(depth) || depth < 1 || depth > 65536) {
      throw new RangeError(`AioEngine depth must be an integer in 1..65536, not ${depth}`);
    }
    const nrEvents = opts.nrEvents ?? depth;
    this.depth = depth;
    this.onComplete = onComplete;
    this.stats = opts.stats ?? new AioStats();
    this.poller = new AdaptivePoller(opts.pollMaxNs ?? 0, this.stats.pollCounters());
    this.reapAfterSubmit = opts.reapAfterSubmit ?? true;
    this.maxSubmit = opts.maxSubmit ?? depth;
    if (!(this.maxSubmit >= 1)) throw new RangeError(`AioEngine maxSubmit must be ≥ 1, not ${opts.maxSubmit}`);

    const ctxp = new BigUint64Array(1);
    const r = native.io_setup(nrEvents, ctxp);
    if (r < 0) throw new SysError('io_setup', -r);
    this.ctx = Number(ctxp[0]);

    const header = readRingHeader(this.ctx);
    this.ring = ringUsable(header) ? new AioRing(this.ctx, header.nr) : null;
    this.ringEvents = this.ring !== null ? header.nr : 0;
    this.userspaceReap = (opts.userspaceReap ?? true) && this.ring !== null;

    this.efd = opts.useEventFd ?? true ? new EventFd() : null;
    this.eventFd = this.efd !== null ? this.efd.fd : -1;
    this.table = new IocbTable(depth, this.eventFd);
    this.plug = new Plug(this.table);
    this.state = new Uint8Array(depth);

    // The ring never holds more events than IOs in flight (≤ depth).
    const cap = Math.max(depth, this.ringEvents);
    this.evTags = new Int32Array(cap);
    this.evRes = new Int32Array(cap);
    this.events = NativeMemory.aligned(cap * io_event.SIZE + 16);
    this.ev32 = new Int32Array(this.events.buffer, 0, cap * (io_event.SIZE / 4));
    this.zeroTimeout = this.events.addr + cap * io_event.SIZE;
    const ring = this.ring;
    this.probe = ring !== null ? () => ring.hasEvents() : () => false;
  }

  /** IOs accepted by the kernel and not yet reaped. */
  get inFlight(): number {
    return this.nInFlight;
  }

  /** IOs in the plug, waiting for flush() (or for EAGAIN to clear). */
  get queued(): number {
    return this.plug.count;
  }

  /** Queues a read of `len` bytes at `offset` into `bufAddr`. No system call. */
  read(tag: number, fd: number, bufAddr: number, len: number, offset: number, rwFlags = 0): void {
    this.claim(tag, len, offset);
    this.table.prepRw(tag, IOCB_CMD_PREAD, fd, bufAddr, len, offset, rwFlags);
    this.plug.push(tag);
  }

  /** Queues a write; pass RWF_DSYNC for FUA. No system call. */
  write(tag: number, fd: number, bufAddr: number, len: number, offset: number, rwFlags = 0): void {
    this.claim(tag, len, offset);
    this.table.prepRw(tag, IOCB_CMD_PWRITE, fd, bufAddr, len, offset, rwFlags);
    this.plug.push(tag);
  }

  /** Queues an IOCB_CMD_FDSYNC (a FLUSH). No system call. */
  fdsync(tag: number, fd: number): void {
    this.claim(tag, 0, 0);
    this.table.prepSync(tag, IOCB_CMD_FDSYNC, fd);
    this.plug.push(tag);
  }

  /**
   * Sends the plug with one io_submit (more after a partial submit, or in
   * chunks of maxSubmit). EAGAIN leaves the rest queued until completions are reaped; an error for
   * one iocb completes that IO with it. Then peeks for completions when
   * reapAfterSubmit. Returns the number of iocbs the kernel accepted.
   */
  flush(): number {
    this.alive();
    const submitted = this.submit();
    if (submitted > 0 && this.reapAfterSubmit && !this.reaping) this.reap();
    return submitted;
  }

  /**
   * Processes the completions available now, without blocking: from the
   * ring, or with one io_getevents with a zero timeout. Calls onComplete for
   * each finished IO and submits again what EAGAIN held back. Returns the number of completion events processed.
   */
  reap(): number {
    this.alive();
    if (this.reaping) return 0; // called from onComplete: the outer reap goes on
    this.reaping = true;
    let total = 0;
    try {
      total = this.dispatch(); // left over if an onComplete threw
      total += this.drain(this.collect());
    } finally {
      this.reaping = false;
    }
    return total;
  }

  /** Cheap peek for pollers: are there completions to reap? Always false without a usable ring. */
  hasCompletions(): boolean {
    return this.batchPos < this.batchLen || (this.ring !== null && this.ring.hasEvents());
  }

  /** Spins on the ring for the poller's current pollNs (see wait()), then reaps. Never blocks. */
  poll(): number {
    this.alive();
    if (this.hasCompletions() || this.poller.run(this.probe)) return this.reap();
    return 0;
  }

  /**
   * Flushes, then waits until at least one IO completes and processes what
   * is there: adaptive polling first, then io_getevents(min_nr 1), whose
   * duration adapts the poll time. Returns 0 at once when nothing is in flight.
   */
  wait(): number {
    this.alive();
    if (this.reaping) throw new Error('AioEngine.wait() called from onComplete');
    if (this.plug.count > 0) this.flush();
    if (this.hasCompletions()) return this.reap();
    if (this.nInFlight === 0) return 0;
    if (this.poller.run(this.probe)) return this.reap();
    this.reaping = true;
    let total = 0;
    try {
      const n = this.getevents(1, null);
      this.stats.reaped(n);
      this.eagain = false;
      this.poller.blocked();
      total = this.drain(n);
    } finally {
      this.reaping = false;
    }
    return total;
  }

  /** Submits and waits until nothing is queued or in flight, so every IO has had its onComplete. */
  drainAll(): void {
    while (this.plug.count > 0 || this.nInFlight > 0) this.wait();
  }

  /** Reads and resets the eventfd counter (non-blocking); 0 when nothing completed since. */
  clearEventFd(): number {
    return this.efd !== null ? this.efd.drain() : 0;
  }

  /**
   * io_destroy (the kernel waits for IO in flight, whose completions are then
   * discarded: call drainAll() first to have them), then frees the iocbs and
   * closes the eventfd. The engine cannot be used afterwards.
   */
  destroy(): void {
    if (this.ctx === 0) return;
    if (this.reaping) throw new Error('AioEngine.destroy() called from onComplete');
    const r = native.io_destroy(this.ctx);
    this.ctx = 0; // the kernel has unmapped the ring
    this.ring = null;
    this.table.free();
    this.events.free();
    if (this.efd !== null) this.efd.close();
    if (r < 0) throw new SysError('io_destroy', -r);
  }

  private claim(tag: number, len: number, offset: number): void {
    // One compare covers "busy", "out of range" and "not an integer" (undefined !== FREE).
    if (this.state[tag] !== FREE) this.badTag(tag);
    if (!(len >= 0 && len <= AIO_MAX_IO_BYTES)) throw new RangeError(`AioEngine: IO length ${len} out of range`);
    if (!(offset >= 0 && offset <= Number.MAX_SAFE_INTEGER)) throw new RangeError(`AioEngine: offset ${offset} out of range`);
    if (this.ctx === 0) this.alive();
    this.state[tag] = QUEUED;
  }

  private badTag(tag: number): never {
    if (Number.isInteger(tag) && tag >= 0 && tag < this.depth) {
      throw new Error(`AioEngine: tag ${tag} already has an IO outstanding`);
    }
    throw new RangeError(`AioEngine: tag ${tag} is not in 0..${this.depth - 1}`);
  }

  private alive(): void {
    if (this.ctx === 0) throw new Error('AioEngine: used after destroy()');
  }

  /** io_submit the plug: partial → resubmit the rest at once; EAGAIN → keep it; -errno → fail the first iocb. */
  private submit(): number {
    const plug = this.plug;
    const c = this.stats.c;
    let submitted = 0;
    while (plug.count > 0) {
      const n = plug.count < this.maxSubmit ? plug.count : this.maxSubmit;
      const r = native.io_submit(this.ctx, n, plug.head);
      c[Counter.SUBMITS]++;
      if (r > 0) {
        for (let i = 0; i < r; i++) this.state[plug.tagAt(i)] = IN_FLIGHT;
        plug.shift(r);
        this.nInFlight += r;
        submitted += r;
        c[Counter.SUBMITTED] += r;
        if (r < n) c[Counter.PARTIAL_SUBMITS]++;
        continue;
      }
      if (r === -EINTR) continue;
      if ((r === -EAGAIN || r === 0) && this.nInFlight > 0) {
        // No request slots until completions are reaped (seed 002): keep the
        // plug, reap() flushes it again.
        c[Counter.EAGAINS]++;
        this.eagain = true;
        break;
      }
      // -errno for the first iocb (EBADF, EINVAL, EFAULT…). EAGAIN with
      // nothing in flight cannot clear by reaping, so it is that IO's error.
      const tag = plug.first;
      plug.shift(1);
      this.finish(tag, r === 0 ? -EIO : r);
    }
    return submitted;
  }

  /** Collects the completions there now (ring, or io_getevents with a zero timeout) into the batch arrays. */
  private collect(): number {
    const n = this.userspaceReap ? this.ring!.reap(this.evTags, this.evRes) : this.getevents(0, this.zeroTimeout);
    this.stats.reaped(n);
    if (n > 0) this.eagain = false; // consumed events give request slots back
    return n;
  }

  /** io_getevents into the batch arrays; min 0 with a zero timeout polls, min 1 with null blocks. */
  private getevents(min: number, timeout: number | null): number {
    let r: number;
    do {
      r = native.io_getevents(this.ctx, min, this.evTags.length, this.events.addr, timeout);
      this.stats.c[Counter.GETEVENTS]++;
    } while (r === -EINTR);
    if (r < 0) throw new SysError('io_getevents', -r);
    const ev = this.ev32;
    for (let i = 0; i < r; i++) {
      this.evTags[i] = ev[i * 8]; // io_event.data lo: the tag
      this.evRes[i] = ev[i * 8 + 4]; // io_event.res lo: bytes or -errno
    }
    return r;
  }

  /**
   * Dispatches a batch of n events just collected and whatever the ring got
   * meanwhile (QEMU's "goto more"), then submits what the callbacks queued
   * (and what EAGAIN held back) and, with reapAfterSubmit, peeks again.
   * Stops looking after `depth` events, so a device that completes inside
   * io_submit (page cache, null) cannot keep one call going forever.
   */
  private drain(n: number): number {
    const limit = this.depth;
    let total = 0;
    for (;;) {
      while (n > 0) {
        this.batchPos = 0;
        this.batchLen = n;
        total += this.dispatch();
        n = this.userspaceReap && total < limit ? this.collect() : 0;
      }
      if (this.plug.count === 0 || this.submit() === 0 || !this.reapAfterSubmit || total >= limit) return total;
      n = this.collect(); // seed 000: fast devices complete during io_submit
    }
  }

  private dispatch(): number {
    const n = this.batchLen - this.batchPos;
    while (this.batchPos < this.batchLen) {
      const i = this.batchPos++;
      this.event(this.evTags[i], this.evRes[i]);
      // With a small maxSubmit, kick the device as soon as a chunk is ready.
      if (this.plug.count >= this.maxSubmit && !this.eagain) this.submit();
    }
    this.batchLen = this.batchPos = 0;
    return n;
  }

  /**
   * One io_event: the IO is done with the kernel's result, short or not.
   * Continuing a short read or write is the caller's rule, not the
   * engine's: ublk-ts has one (ublk/queue.ts complete()), shared by every
   * target and engine.
   */
  private event(tag: number, res: number): void {
    if (this.state[tag] !== IN_FLIGHT) {
      throw new Error(`AioEngine: completion for tag ${tag}, which is not in flight (res ${res})`);
    }
    this.nInFlight--;
    if (res >= 0 && res < this.table.nbytes(tag) && this.table.opcode(tag) <= IOCB_CMD_PWRITE) this.stats.c[Counter.SHORT_IOS]++;
    this.finish(tag, res);
  }

  private finish(tag: number, res: number): void {
    this.state[tag] = FREE;
    const c = this.stats.c;
    c[Counter.IOS]++;
    if (res >= 0) c[Counter.BYTES] += res;
    else c[Counter.ERRORS]++;
    this.onComplete(tag, res);
  }
}
