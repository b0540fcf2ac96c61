/**
 * The per-queue dispatcher, run by one worker thread per hardware queue for
 * the queue's whole life (ublk_drv takes every command of a queue from the
 * task that fetched it). The loop reads as submit → reap → dispatch:
 *
 *   one io_uring_enter: commits of the last round go in, new requests (and
 *   AIO completions, through the target's eventfd) come out;
 *   each request CQE: decode ublksrv_io_desc[tag], hand it to the target;
 *   target.flush() (one io_submit), target.reap() (userspace aio_ring);
 *   each completion: a COMMIT_AND_FETCH_REQ SQE with the result.
 *
 * Nothing here allocates per request. Anything that goes wrong — an enter
 * the kernel keeps refusing, an eventfd read that fails, a target that
 * throws — ends the queue with a QueueError: requests still held are failed
 * with EIO, and run() rejects with the reason for the daemon to report.
 */
import { performance } from 'node:perf_hooks';
import { SysError } from '../sys/error.js';
import { NativeMemory, MAP_POPULATE, MAP_SHARED, PROT_READ, roundUp, PAGE_SIZE } from '../sys/memory.js';
import { pollReadable } from '../sys/native.js';
import { AdaptivePoller } from '../sys/poller.js';
import {
  IORING_CQE_F_MORE,
  IORING_ENTER_GETEVENTS,
  IORING_SETUP_COOP_TASKRUN,
  IORING_SETUP_TASKRUN_FLAG,
  IOSQE_FIXED_FILE,
  POLLIN,
} from '../sys/uring/constants.js';
import { prepPollMultishot, prepPollRemove, prepRead, prepUringCmd, putU64, sqeSetData, sqeSetFlags } from '../sys/uring/prep.js';
import { IoUring } from '../sys/uring/ring.js';
import { USER_DATA_INTERNAL, USER_DATA_IO_CMD, USER_DATA_TARGET, userDataHi, userDataKind, userDataOwner } from '../sys/uring/user-data.js';
import { SCRATCH_BYTES, type QueueContext, type Target, type TargetQueue } from '../target/target.js';
import { LAT_DISCARD, LAT_FLUSH, LAT_NONE, LAT_READ, LAT_WRITE, recordLatency } from './latency.js';
import { QS } from './queue-stats.js';
import * as U from './uapi.js';
import { EAGAIN, EBUSY, EINTR, EIO } from '../sys/errno.js';

// Low words of USER_DATA_INTERNAL CQEs.
const KICK = 0; // the daemon's stop eventfd
const TARGET_EVENT = 1; // the target's completion eventfd (a multishot poll; the high word's kind is its generation)
const TARGET_EVENT_REMOVE = 2; // the removal of that poll (a shared eventfd's, when the queue goes idle)

// Tag states.
const FETCHING = 0; // a fetch or commit-and-fetch is with the kernel
const IN_TARGET = 1; // the target owns the request
const ABORTED = 2; // the kernel answered UBLK_IO_RES_ABORT: the queue is going away


/**
 * io_uring_enter answers EAGAIN or EBUSY when it wants completions reaped
 * first; that many in a row (a second or more, with a 1 ms pause whenever
 * nothing is there to reap) and the queue gives up.
 */
const MAX_BUSY_ENTERS = 1000;
const pauseCell = new Int32Array(new SharedArrayBuffer(4));

/** control[0] values, written by the daemon before it signals the kick eventfd. */
export const QUEUE_RUN = 0;
export const QUEUE_STOP = 1;

/** Why a queue stopped serving: its message is the one line the daemon logs and `ublk list` shows. */
export class QueueError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'QueueError';
  }
}

export interface QueueOptions {
  devId: number;
  qId: number;
  depth: number;
  maxIoSize: number;
  /** /dev/ublkc<devId>, opened once by the daemon (the kernel allows one opener). */
  cdevFd: number;
  /** The daemon's kick eventfd for this queue; see `control`. */
  kickFd: number;
  /** [0]: QUEUE_RUN or QUEUE_STOP. */
  control: Int32Array;
  stats: Float64Array;
  /** Latency histograms (latency.ts), shared like `stats`. */
  latency: Float64Array;
  /** Adaptive polling cap before blocking (0: off). */
  pollMaxNs: number;
}

/**
 * The kernel's side of one queue: where its descriptors are and how an IO
 * command is put in an SQE. ublk_drv's char device is the one used; host
 * tests play the kernel with another (tests/lib/fake-ublk.ts).
 */
export interface QueueKernel {
  /** ublksrv_io_desc[depth], written by the kernel: 6 u32 words per tag. */
  readonly desc: Uint32Array;
  /** Fills `sqe` with the IO command `cmdOp` (FETCH_REQ, COMMIT_AND_FETCH_REQ) of `tag`; the caller sets user_data. */
  prepIoCmd(ring: IoUring, sqe: number, cmdOp: number, tag: number, result: number, bufAddr: number): void;
  close(): void;
}

/** The char device's slot in the queue ring's fixed file table (as in ublksrv). */
const CDEV_FIXED_FILE = 0;

/**
 * /dev/ublkc<devId>: the queue's descriptors mapped read-only, IO commands
 * as uring_cmds on the char device, registered as fixed file 0 of the ring.
 */
class UblkCharDevice implements QueueKernel {
  readonly desc: Uint32Array;
  private readonly mem: NativeMemory;

  constructor(ring: IoUring, cdevFd: number, devId: number, private readonly qId: number, depth: number) {
    const bytes = roundUp(depth * U.ublksrv_io_desc.SIZE, PAGE_SIZE);
    this.mem = NativeMemory.map(bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, cdevFd, U.descOffset(qId), `/dev/ublkc${devId}`);
    this.desc = new Uint32Array(this.mem.buffer);
    try {
      ring.registerFiles([cdevFd]);
    } catch (e) {
      this.mem.free();
      throw e;
    }
  }

  prepIoCmd(ring: IoUring, sqe: number, cmdOp: number, tag: number, result: number, bufAddr: number): void {
    const w = prepUringCmd(ring, sqe, CDEV_FIXED_FILE, cmdOp);
    sqeSetFlags(ring, sqe, IOSQE_FIXED_FILE);
    const u32 = ring.sqe32;
    // struct ublksrv_io_cmd: q_id u16 | tag u16, result i32, addr u64
    u32[w] = this.qId | (tag << 16);
    u32[w + 1] = result;
    putU64(u32, w + 2, bufAddr);
  }

  close(): void {
    this.mem.free();
  }
}

/** How an error names the request it was serving. */
function ioName(tag: number, op: number, length: number, offset: number): string {
  return `queueIo(tag ${tag}, op ${op}, ${length} bytes at ${offset})`;
}

function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class UblkQueue implements QueueContext {
  readonly devId: number;
  readonly qId: number;
  readonly depth: number;
  readonly maxIoSize: number;
  readonly ring: IoUring;

  private readonly kickFd: number;
  private readonly control: Int32Array;
  private readonly stats: Float64Array;
  private readonly latency: Float64Array;
  private readonly sync: boolean;
  private readonly targetName: string;
  private target!: TargetQueue;

  private readonly kernel: QueueKernel;
  /** ublksrv_io_desc[depth], read-only shared with the kernel (6 u32 words each). */
  private readonly desc: Uint32Array;
  private readonly bufMem: NativeMemory;
  private readonly buffers: Uint8Array[] = [];
  /** All of bufMem: the tag buffers, then the scratch area. */
  private readonly bufBytes: Uint8Array;
  private readonly scratchAt: number;
  readonly scratch: Uint8Array;
  readonly scratchAddr: number;
  /** The 8-byte landing spot for the kick eventfd's read. */
  private readonly kickBuf: NativeMemory;
  private readonly tagState: Uint8Array;
  /** Op and length of the request each tag holds, to check the target's result. */
  private readonly tagOp: Uint8Array;
  private readonly tagLength: Uint32Array;
  /** When each tag's request was dispatched (the clock below, ms) and its latency class (LAT_*). */
  private readonly tagStart: Float64Array;
  /**
   * The clock of the latency histograms, read once per turn: where the
   * guest's clocksource has no vDSO (a VM under emulation) every read is a
   * clock_gettime syscall, and two per request cost the bench 64% more guest time per
   * 4k QD32 read. So a request's latency is measured in
   * turns of the queue loop; completions outside a turn (an async
   * target's promise, a queue that ends) read the clock themselves.
   */
  private turnNow = 0;
  private inTurn = false;
  private readonly tagLatOp: Uint8Array;
  private aborted = 0;
  private inTarget = 0;
  /** A poll of the target's eventfd is armed (or about to be), and its generation: a removed poll's last CQE is not the current one's. */
  private targetPolled = false;
  private targetPollGen = 0;
  private stopRequested = false;
  /** The first error that ended the queue. */
  private failure: QueueError | null = null;
  private busyEnters = 0;
  private readonly poller: AdaptivePoller;

  /** `kernel`: who plays ublk_drv (default: /dev/ublkc<devId> at opts.cdevFd). */
  constructor(opts: QueueOptions, target: Target<never>, kernel?: (ring: IoUring) => QueueKernel) {
    this.devId = opts.devId;
    this.qId = opts.qId;
    this.depth = opts.depth;
    this.maxIoSize = opts.maxIoSize;
    this.kickFd = opts.kickFd;
    this.control = opts.control;
    this.stats = opts.stats;
    this.latency = opts.latency;
    this.targetName = target.name;
    this.poller = new AdaptivePoller(opts.pollMaxNs, { array: opts.stats, hits: QS.pollHits, misses: QS.pollMisses, pollNs: QS.pollNs });
    // A target that never returns a promise lets the thread block in
    // io_uring_enter; then ublk's task work may wait for our next enter
    // (COOP_TASKRUN) instead of interrupting us, and IORING_SQ_TASKRUN says
    // when it waits. Async targets need the event loop, whose epoll sleep
    // only a non-cooperative task work notification wakes.
    this.sync = target.sync === true;
    // Room for a fetch/commit per tag, a target SQE per tag, the kick read and the target poll.
    const entries = 2 ** Math.ceil(Math.log2(2 * this.depth + 2));
    this.ring = new IoUring(entries, { flags: this.sync ? IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG : 0 });
    this.tagState = new Uint8Array(this.depth);
    this.tagOp = new Uint8Array(this.depth);
    this.tagLength = new Uint32Array(this.depth);
    this.tagStart = new Float64Array(this.depth);
    this.tagLatOp = new Uint8Array(this.depth);
    try {
      this.kernel = kernel !== undefined ? kernel(this.ring) : new UblkCharDevice(this.ring, opts.cdevFd, this.devId, this.qId, this.depth);
      this.desc = this.kernel.desc;
      // depth × max IO size (64 MiB at the defaults), then the target's
      // scratch area: only the pages requests touch take RAM.
      this.scratchAt = this.depth * this.maxIoSize;
      this.bufMem = NativeMemory.anonymous(this.scratchAt + SCRATCH_BYTES);
      for (let t = 0; t < this.depth; t++) {
        this.buffers.push(new Uint8Array(this.bufMem.buffer, t * this.maxIoSize, this.maxIoSize));
      }
      this.bufBytes = new Uint8Array(this.bufMem.buffer);
      this.scratch = new Uint8Array(this.bufMem.buffer, this.scratchAt, SCRATCH_BYTES);
      this.scratchAddr = this.bufMem.addr + this.scratchAt;
      this.kickBuf = NativeMemory.aligned(8, 8);
    } catch (e) {
      this.ring.close();
      throw e;
    }
  }

  /** Creates the target's queue server; call before fetchAll(). */
  async attach(target: Target<never>, queueData: unknown): Promise<void> {
    this.target = await target.createQueue(this, queueData);
  }

  targetStatsBuffer(): SharedArrayBuffer | null {
    return this.target.statsBuffer ?? null;
  }

  bufferAddr(tag: number): number {
    return this.bufMem.addr + tag * this.maxIoSize;
  }

  buffer(tag: number): Uint8Array {
    return this.buffers[tag];
  }

  copyFromScratch(tag: number, offset: number, from: number, n: number): void {
    const at = this.scratchAt + from;
    this.bufBytes.copyWithin(tag * this.maxIoSize + offset, at, at + n);
  }

  getSqe(): number {
    let sqe = this.ring.getSqe();
    if (sqe < 0) {
      // The SQ holds room for every SQE the queue and its target can have
      // outstanding, so it is only full of SQEs not yet handed over.
      this.entered(this.ring.submit());
      sqe = this.ring.getSqe();
      if (sqe < 0) throw new QueueError(`the queue's io_uring has no free SQE after a submit (${this.ring.sqPending()} pending)`);
    }
    return sqe;
  }

  /**
   * Checks an io_uring_enter result. EAGAIN and EBUSY mean the kernel wants
   * completions reaped first, which the next turn does: retried (with a 1 ms
   * pause when there is nothing to reap) up to MAX_BUSY_ENTERS times in a
   * row. Any other error ends the queue.
   */
  private entered(r: number): void {
    if (r >= 0) {
      this.busyEnters = 0;
      return;
    }
    const busy = r === -EAGAIN || r === -EBUSY;
    if (busy && ++this.busyEnters < MAX_BUSY_ENTERS) {
      if (this.ring.cqReady() === 0) Atomics.wait(pauseCell, 0, 0, 1);
      return;
    }
    const why = new SysError('io_uring_enter', -r);
    throw new QueueError(busy ? `${why.message}, ${this.busyEnters} times in a row` : why.message, { cause: why });
  }

  /** FETCH_REQ for every tag, the kick read and the target poll; returns once the kernel has them all. */
  fetchAll(): void {
    for (let tag = 0; tag < this.depth; tag++) this.prepIoCmd(U.UBLK_U_IO_FETCH_REQ, tag, 0);
    this.armKick();
    // A shared eventfd is polled only while the queue has requests in the target (turnWork arms it).
    if (this.target.eventFd !== undefined && this.target.eventFd >= 0 && this.target.eventFdShared !== true) this.armTargetPoll(this.target.eventFd);
    for (let i = 0; this.ring.sqPending() > 0; i++) {
      if (i >= MAX_BUSY_ENTERS) throw new QueueError(`the kernel took only part of the fetches (${this.ring.sqPending()} left)`);
      this.entered(this.ring.submit());
    }
  }

  private prepIoCmd(cmdOp: number, tag: number, result: number): void {
    const sqe = this.getSqe();
    this.kernel.prepIoCmd(this.ring, sqe, cmdOp, tag, result, this.bufferAddr(tag));
    sqeSetData(this.ring, sqe, tag, USER_DATA_IO_CMD);
  }

  /** A read of the daemon's kick eventfd: it completes when the daemon signals (rarely: a stop). */
  private armKick(): void {
    const sqe = this.getSqe();
    prepRead(this.ring, sqe, this.kickFd, this.kickBuf.addr, 8, 0);
    sqeSetData(this.ring, sqe, KICK, USER_DATA_INTERNAL);
  }

  /**
   * A multishot poll of the target's eventfd: a CQE whenever it is
   * signalled, with nothing to arm again and no read per round (the
   * counter is never read; the target's reap() finds what finished).
   */
  private armTargetPoll(fd: number): void {
    const sqe = this.getSqe();
    this.targetPollGen = (this.targetPollGen + 1) & 0xffff;
    this.targetPolled = true;
    prepPollMultishot(this.ring, sqe, fd, POLLIN);
    sqeSetData(this.ring, sqe, TARGET_EVENT, userDataHi(USER_DATA_INTERNAL, this.targetPollGen));
  }

  /** Ends the poll of a shared eventfd: every signal is for some queue's IO, and this one has none out. */
  private removeTargetPoll(): void {
    const sqe = this.getSqe();
    this.targetPolled = false;
    prepPollRemove(this.ring, sqe, TARGET_EVENT, userDataHi(USER_DATA_INTERNAL, this.targetPollGen));
    sqeSetData(this.ring, sqe, TARGET_EVENT_REMOVE, USER_DATA_INTERNAL);
  }

  complete(tag: number, res: number): void {
    if (this.tagState[tag] !== IN_TARGET) return;
    this.tagState[tag] = FETCHING;
    this.inTarget--;
    this.stats[QS.inFlight] = this.inTarget;
    // Every request dispatch() handed out ends here, errors and the EIO of
    // a queue that is ending included; the tag state check above keeps out
    // tags that were never dispatched.
    const latOp = this.tagLatOp[tag];
    if (latOp !== LAT_NONE) recordLatency(this.latency, latOp, ((this.inTurn ? this.turnNow : performance.now()) - this.tagStart[tag]) * 1000);
    if (this.tagOp[tag] <= U.UBLK_IO_OP_WRITE) {
      // The one rule for short IO, whatever the target or engine: a READ or
      // WRITE that did part of its length completes that part, and ublk_drv
      // (ublk_complete_rq) sends the rest again as a new request. 0 bytes
      // is an error: ublk_drv fails a READ of 0, and would send a WRITE of 0
      // again for ever. More than asked is clamped.
      const length = this.tagLength[tag];
      if (res === 0) res = -EIO;
      else if (res > length) res = length;
      else if (res > 0 && res < length) this.stats[QS.shortIos]++;
    }
    if (res < 0) this.stats[QS.errors]++;
    this.prepIoCmd(U.UBLK_U_IO_COMMIT_AND_FETCH_REQ, tag, res);
    if (!this.sync) this.scheduleTurn();
  }

  /**
   * Serves until the kernel aborted every tag (device stopped) or the daemon
   * asked to stop; rejects with a QueueError when the queue failed.
   */
  run(): Promise<void> {
    if (!this.sync) return this.runAsync();
    try {
      this.runSync();
    } catch (e) {
      this.fail(e);
    }
    this.end();
    return this.failure !== null ? Promise.reject(this.failure) : Promise.resolve();
  }

  private fail(e: unknown): void {
    this.failure ??= e instanceof QueueError ? e : new QueueError(reason(e), { cause: e });
  }

  /** A target method threw: the queue cannot trust its state any more. */
  private targetThrew(what: string, e: unknown): void {
    this.fail(new QueueError(`target ${this.targetName}: ${what} threw: ${reason(e)}`, { cause: e }));
  }

  private finished(): boolean {
    return this.stopRequested || this.failure !== null || (this.aborted === this.depth && this.pendingTargetIo() === 0);
  }

  private pendingTargetIo(): number {
    return this.inTarget + (this.target.inFlight?.() ?? 0);
  }

  private runSync(): void {
    const ring = this.ring;
    const target = this.target;
    const stats = this.stats;
    const probe = () => {
      if (ring.cqReady() > 0) return true;
      // ublk's request CQEs wait in task work until we enter (COOP_TASKRUN).
      if (ring.taskrunPending()) {
        this.entered(ring.enter(0, 0, IORING_ENTER_GETEVENTS));
        return ring.cqReady() > 0;
      }
      return target.hasCompletions !== undefined && target.hasCompletions();
    };
    while (!this.finished()) {
      stats[QS.enters]++;
      if (ring.cqReady() > 0 || (target.hasCompletions !== undefined && target.hasCompletions())) {
        // Work is already visible: hand over the commits without waiting.
        this.entered(ring.submit());
      } else if (this.poller.pollMaxNs > 0) {
        // Commits must reach the kernel before polling can see new requests.
        this.entered(ring.submit());
        if (!this.poller.run(probe)) {
          stats[QS.waits]++;
          this.entered(ring.submitAndWait(1));
        }
        this.poller.blocked();
      } else {
        stats[QS.waits]++;
        this.entered(ring.submitAndWait(1));
      }
      this.turn();
    }
  }

  /**
   * The queue is done. After a stop request or a failure, the requests the
   * target still holds are failed with EIO (ublk_drv would wait for them
   * forever); close() then closes the ring, which makes the kernel abort
   * the outstanding fetches.
   */
  private end(): void {
    if (!this.stopRequested && this.failure === null) return;
    try {
      for (let tag = 0; tag < this.depth; tag++) if (this.tagState[tag] === IN_TARGET) this.complete(tag, -EIO);
      this.ring.submit();
    } catch {
      // The ring takes no more commits: closing it lets the kernel fail them.
    }
  }

  private turnScheduled = false;
  private settle: (() => void) | null = null;
  private pollHandle: ReturnType<typeof pollReadable> | null = null;

  private runAsync(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.settle = () => (this.failure !== null ? reject(this.failure) : resolve());
      this.pollHandle = pollReadable(this.ring.fd, () => this.asyncTurn());
      this.asyncTurn();
    });
  }

  private scheduleTurn(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    setImmediate(() => this.asyncTurn());
  }

  private asyncTurn(): void {
    this.turnScheduled = false;
    if (this.settle === null) return; // finished: the ring may be closed
    try {
      this.stats[QS.enters]++;
      this.entered(this.ring.submit());
      this.turn();
      this.entered(this.ring.submit());
    } catch (e) {
      this.fail(e);
    }
    if (this.finished()) {
      this.end();
      this.pollHandle?.close();
      this.pollHandle = null;
      const s = this.settle;
      this.settle = null;
      s();
    } else if (this.busyEnters > 0) {
      this.scheduleTurn(); // the kernel wants another try, which no poll event will announce
    }
  }

  /** Dispatches every ready CQE, then lets the target submit and reap. */
  private turn(): void {
    this.turnNow = performance.now();
    this.inTurn = true;
    try {
      this.turnWork();
    } finally {
      this.inTurn = false;
    }
  }

  private turnWork(): void {
    const ring = this.ring;
    const target = this.target;
    const n = ring.cqReady();
    for (let i = 0; i < n; i++) {
      const hi = ring.cqeDataHi(i);
      const lo = ring.cqeDataLo(i);
      const res = ring.cqeRes(i);
      const owner = userDataOwner(hi);
      if (owner === USER_DATA_IO_CMD) this.onIoCmd(lo, res);
      else if (owner === USER_DATA_TARGET) this.onTargetCqe(lo, userDataKind(hi), res);
      else this.onInternal(lo, userDataKind(hi), res, ring.cqeFlags(i));
    }
    ring.cqAdvance(n);
    if (this.failure !== null) return;
    try {
      target.flush?.();
    } catch (e) {
      this.targetThrew('flush()', e);
      return;
    }
    try {
      target.reap?.();
    } catch (e) {
      this.targetThrew('reap()', e);
      return;
    }
    // After the turn's dispatches and reap: a queue with requests in the
    // target polls its shared eventfd, whatever ended the last poll.
    if (target.eventFdShared === true && !this.targetPolled && this.pendingTargetIo() > 0) this.armTargetPoll(target.eventFd!);
  }

  private onTargetCqe(lo: number, kind: number, res: number): void {
    try {
      this.target.onCqe?.(lo, kind, res);
    } catch (e) {
      this.targetThrew('onCqe()', e);
    }
  }

  private onIoCmd(tag: number, res: number): void {
    if (res === U.UBLK_IO_RES_OK) {
      this.dispatch(tag);
    } else if (this.tagState[tag] !== ABORTED) {
      // UBLK_IO_RES_ABORT: the queue is going away. Any other error: the
      // kernel refused the command (a commit after the queue died). Either
      // way this tag gets no more requests.
      this.tagState[tag] = ABORTED;
      this.aborted++;
    }
  }

  /**
   * The kick read finished: stop if the daemon asks, else read again (a
   * failed read ends the queue: the stop request would be lost). Or the
   * target's eventfd was signalled: the reap that follows this turn
   * collects the completions; the poll is armed again only when the kernel
   * ended it (no F_MORE, after a CQ overflow), and a poll error ends the queue.
   * A shared eventfd's poll woken with no requests in the target is removed
   * (they were another queue's); turnWork arms it again when requests come.
   * CQEs of a removed poll, and the removal's own, change nothing.
   */
  private onInternal(which: number, gen: number, res: number, flags: number): void {
    if (which === KICK) {
      if (Atomics.load(this.control, 0) === QUEUE_STOP) this.stopRequested = true;
      else if (res < 0 && res !== -EAGAIN && res !== -EINTR) this.fail(new QueueError(`reading the daemon's stop eventfd: ${new SysError('read', -res).message}`));
      else this.armKick();
    } else if (which === TARGET_EVENT && gen === this.targetPollGen && this.targetPolled) {
      const shared = this.target.eventFdShared === true;
      if (res < 0) this.fail(new QueueError(`target ${this.targetName}: polling its completion eventfd: ${new SysError('poll', -res).message}`));
      else if ((flags & IORING_CQE_F_MORE) === 0) {
        this.targetPolled = false;
        if (!shared) this.armTargetPoll(this.target.eventFd!);
      } else if (shared && this.pendingTargetIo() === 0) this.removeTargetPoll();
    }
  }

  private dispatch(tag: number): void {
    const desc = this.desc;
    const op = U.iodOp(desc, tag);
    const flags = U.iodFlags(desc, tag);
    const length = U.iodLength(desc, tag);
    const offset = U.iodOffset(desc, tag);
    this.tagState[tag] = IN_TARGET;
    this.tagOp[tag] = op;
    this.tagLength[tag] = length;
    // performance.now() is a plain double (process.hrtime.bigint() would allocate a BigInt per request).
    this.tagStart[tag] = this.inTurn ? this.turnNow : performance.now();
    this.inTarget++;
    const stats = this.stats;
    stats[QS.inFlight] = this.inTarget;
    switch (op) {
      case U.UBLK_IO_OP_READ:
        stats[QS.reads]++;
        stats[QS.readBytes] += length;
        this.tagLatOp[tag] = LAT_READ;
        break;
      case U.UBLK_IO_OP_WRITE:
        stats[QS.writes]++;
        stats[QS.writeBytes] += length;
        this.tagLatOp[tag] = LAT_WRITE;
        break;
      case U.UBLK_IO_OP_FLUSH:
        stats[QS.flushes]++;
        this.tagLatOp[tag] = LAT_FLUSH;
        break;
      case U.UBLK_IO_OP_DISCARD:
        stats[QS.discards]++;
        stats[QS.discardBytes] += length;
        this.tagLatOp[tag] = LAT_DISCARD;
        break;
      case U.UBLK_IO_OP_WRITE_ZEROES:
        stats[QS.writeZeroes]++;
        stats[QS.writeZeroesBytes] += length;
        this.tagLatOp[tag] = LAT_DISCARD; // timed with discards (latency.ts)
        break;
      default:
        stats[QS.otherOps]++;
        this.tagLatOp[tag] = LAT_NONE;
    }
    if (this.failure !== null) {
      this.complete(tag, -EIO); // the queue is ending: serve nothing more
      return;
    }
    let r: number | undefined | Promise<number>;
    try {
      r = this.target.queueIo(tag, op, flags, offset, length);
    } catch (e) {
      this.complete(tag, -EIO);
      this.targetThrew(ioName(tag, op, length, offset), e);
      return;
    }
    if (typeof r === 'number') this.complete(tag, r);
    else if (r !== undefined) this.completeLater(tag, op, length, offset, r);
  }

  private completeLater(tag: number, op: number, length: number, offset: number, p: Promise<number>): void {
    p.then(
      (res) => {
        if (typeof res === 'number') return this.complete(tag, res);
        this.complete(tag, -EIO);
        this.fail(new QueueError(`target ${this.targetName}: ${ioName(tag, op, length, offset)} resolved to ${typeof res}, not bytes or -errno`));
      },
      (e: unknown) => {
        this.complete(tag, -EIO);
        this.fail(new QueueError(`target ${this.targetName}: ${ioName(tag, op, length, offset)} rejected: ${reason(e)}`, { cause: e }));
      },
    )
      .catch((e: unknown) => this.fail(e)) // a commit the ring refused
      .finally(() => this.scheduleTurn());
  }

  close(): void {
    try {
      this.target?.close?.();
    } finally {
      this.ring.close();
      this.kernel.close();
      this.bufMem.free();
      this.kickBuf.free();
    }
  }
}
