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
 * Nothing here allocates per request.
 */
import { SysError } from '../sys/error.js';
import { NativeMemory, MAP_POPULATE, MAP_SHARED, PROT_READ, roundUp, PAGE_SIZE } from '../sys/memory.js';
import { pollReadable } from '../sys/native.js';
import { IORING_SETUP_COOP_TASKRUN, IORING_SETUP_TASKRUN_FLAG } from '../sys/uring/constants.js';
import { prepRead, prepUringCmd, putU64, sqeSetData } from '../sys/uring/prep.js';
import { IoUring } from '../sys/uring/ring.js';
import { AdaptivePoller } from '../aio/poll.js';
import { TARGET_USER_DATA, type QueueContext, type Target, type TargetQueue } from '../target/target.js';
import { QS } from './queue-stats.js';
import * as U from './uapi.js';

/** user_data high words: 0 is a ublk IO command (low word = tag); target SQEs carry TARGET_USER_DATA. */
const IO_CMD = 0;
const INTERNAL = 0x40000000;
const KICK = 0; // low word of INTERNAL: the daemon's stop eventfd
const TARGET_EVENT = 1; // low word of INTERNAL: the target's completion eventfd

// Tag states.
const FETCHING = 0; // a fetch or commit-and-fetch is with the kernel
const IN_TARGET = 1; // the target owns the request
const ABORTED = 2; // the kernel answered UBLK_IO_RES_ABORT: the queue is going away

const EIO = 5;

/** control[0] values, written by the daemon before it signals the kick eventfd. */
export const QUEUE_RUN = 0;
export const QUEUE_STOP = 1;

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
  /** Adaptive polling cap before blocking (0: off). */
  pollMaxNs: number;
}

export class UblkQueue implements QueueContext {
  readonly devId: number;
  readonly qId: number;
  readonly depth: number;
  readonly maxIoSize: number;
  readonly ring: IoUring;

  private readonly cdevFd: number;
  private readonly kickFd: number;
  private readonly control: Int32Array;
  private readonly stats: Float64Array;
  private readonly sync: boolean;
  private target!: TargetQueue;

  private readonly descMem: NativeMemory;
  /** ublksrv_io_desc[depth], read-only shared with the kernel (6 u32 words each). */
  private readonly desc: Uint32Array;
  private readonly bufMem: NativeMemory;
  private readonly buffers: Uint8Array[] = [];
  /** 8-byte landing spots for the eventfd reads. */
  private readonly scratch: NativeMemory;
  private readonly tagState: Uint8Array;
  /** Op and length of the request each tag holds, to check the target's result. */
  private readonly tagOp: Uint8Array;
  private readonly tagLength: Uint32Array;
  private aborted = 0;
  private inTarget = 0;
  private stopRequested = false;
  private readonly poller: AdaptivePoller;

  constructor(opts: QueueOptions, target: Target<never>) {
    this.devId = opts.devId;
    this.qId = opts.qId;
    this.depth = opts.depth;
    this.maxIoSize = opts.maxIoSize;
    this.cdevFd = opts.cdevFd;
    this.kickFd = opts.kickFd;
    this.control = opts.control;
    this.stats = opts.stats;
    this.poller = new AdaptivePoller(opts.pollMaxNs);
    // A target that never returns a promise lets the thread block in
    // io_uring_enter; then ublk's task work may wait for our next enter
    // (COOP_TASKRUN) instead of interrupting us, and IORING_SQ_TASKRUN says
    // when it waits. Async targets need the event loop, whose epoll sleep
    // only a non-cooperative task work notification wakes.
    this.sync = target.sync === true;
    // Room for a fetch/commit per tag, a target SQE per tag, and the two eventfd reads.
    const entries = 2 ** Math.ceil(Math.log2(2 * this.depth + 2));
    this.ring = new IoUring(entries, { flags: this.sync ? IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG : 0 });
    this.tagState = new Uint8Array(this.depth);
    this.tagOp = new Uint8Array(this.depth);
    this.tagLength = new Uint32Array(this.depth);
    try {
      const descBytes = roundUp(this.depth * U.ublksrv_io_desc.SIZE, PAGE_SIZE);
      this.descMem = NativeMemory.map(descBytes, PROT_READ, MAP_SHARED | MAP_POPULATE, this.cdevFd, U.descOffset(this.qId), `/dev/ublkc${this.devId}`);
      this.desc = new Uint32Array(this.descMem.buffer);
      this.bufMem = NativeMemory.aligned(this.depth * this.maxIoSize, PAGE_SIZE);
      for (let t = 0; t < this.depth; t++) {
        this.buffers.push(new Uint8Array(this.bufMem.buffer, t * this.maxIoSize, this.maxIoSize));
      }
      this.scratch = NativeMemory.aligned(16, 16);
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

  getSqe(): number {
    let sqe = this.ring.getSqe();
    while (sqe < 0) {
      this.ring.submit();
      sqe = this.ring.getSqe();
    }
    return sqe;
  }

  /** FETCH_REQ for every tag, plus the eventfd reads; returns once the kernel has them all. */
  fetchAll(): void {
    for (let tag = 0; tag < this.depth; tag++) this.prepIoCmd(U.UBLK_U_IO_FETCH_REQ, tag, 0);
    this.armRead(this.kickFd, KICK);
    if (this.target.eventFd !== undefined && this.target.eventFd >= 0) this.armRead(this.target.eventFd, TARGET_EVENT);
    while (this.ring.sqPending() > 0) {
      const r = this.ring.submit();
      if (r < 0) throw new SysError('io_uring_enter', -r);
    }
  }

  private prepIoCmd(cmdOp: number, tag: number, result: number): void {
    const sqe = this.getSqe();
    const w = prepUringCmd(this.ring, sqe, this.cdevFd, cmdOp);
    const u32 = this.ring.sqe32;
    // struct ublksrv_io_cmd: q_id u16 | tag u16, result i32, addr u64
    u32[w] = this.qId | (tag << 16);
    u32[w + 1] = result;
    putU64(u32, w + 2, this.bufferAddr(tag));
    sqeSetData(this.ring, sqe, tag, IO_CMD);
  }

  private armRead(fd: number, which: number): void {
    const sqe = this.getSqe();
    prepRead(this.ring, sqe, fd, this.scratch.addr + which * 8, 8, 0);
    sqeSetData(this.ring, sqe, which, INTERNAL);
  }

  complete(tag: number, res: number): void {
    if (this.tagState[tag] !== IN_TARGET) return;
    this.tagState[tag] = FETCHING;
    this.inTarget--;
    this.stats[QS.inFlight] = this.inTarget;
    const op = this.tagOp[tag];
    if (op <= U.UBLK_IO_OP_WRITE) {
      // ublk_drv requeues the rest of a short READ/WRITE, and would requeue a
      // WRITE that did nothing forever: 0 bytes is an error, more is clamped.
      if (res === 0) res = -EIO;
      else if (res > this.tagLength[tag]) res = this.tagLength[tag];
    }
    if (res < 0) this.stats[QS.errors]++;
    this.prepIoCmd(U.UBLK_U_IO_COMMIT_AND_FETCH_REQ, tag, res);
    if (!this.sync) this.scheduleTurn();
  }

  /** Runs until the kernel aborted every tag (device stopped) or the daemon asked to stop. */
  run(): Promise<void> {
    if (this.sync) {
      this.runSync();
      return Promise.resolve();
    }
    return this.runAsync();
  }

  private finished(): boolean {
    return this.stopRequested || (this.aborted === this.depth && this.pendingTargetIo() === 0);
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
        ring.enter(0, 0, 1 /* IORING_ENTER_GETEVENTS */);
        return ring.cqReady() > 0;
      }
      return target.hasCompletions !== undefined && target.hasCompletions();
    };
    while (!this.finished()) {
      stats[QS.enters]++;
      if (ring.cqReady() > 0 || (target.hasCompletions !== undefined && target.hasCompletions())) {
        // Work is already visible: hand over the commits without waiting.
        ring.submit();
      } else if (this.poller.pollMaxNs > 0) {
        // Commits must reach the kernel before polling can see new requests.
        ring.submit();
        if (this.poller.run(probe)) {
          stats[QS.pollHits]++;
        } else {
          stats[QS.pollMisses]++;
          stats[QS.waits]++;
          ring.submitAndWait(1);
        }
        this.poller.blocked();
        stats[QS.pollNs] = this.poller.pollNs;
      } else {
        stats[QS.waits]++;
        ring.submitAndWait(1);
      }
      this.turn();
    }
    if (this.stopRequested) this.abandon();
  }

  /**
   * A forced stop: requests the target still holds are failed with EIO
   * (ublk_drv would wait for them forever), then the ring is closed by
   * close(), which makes the kernel abort the outstanding fetches.
   */
  private abandon(): void {
    for (let tag = 0; tag < this.depth; tag++) if (this.tagState[tag] === IN_TARGET) this.complete(tag, -EIO);
    this.ring.submit();
  }

  private turnScheduled = false;
  private settle: (() => void) | null = null;
  private pollHandle: ReturnType<typeof pollReadable> | null = null;

  private runAsync(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.settle = resolve;
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
    this.stats[QS.enters]++;
    this.ring.submit();
    this.turn();
    this.ring.submit();
    if (this.finished() && this.settle) {
      if (this.stopRequested) this.abandon();
      this.pollHandle?.close();
      this.pollHandle = null;
      const s = this.settle;
      this.settle = null;
      s();
    }
  }

  /** Dispatches every ready CQE, then lets the target submit and reap. */
  private turn(): void {
    const ring = this.ring;
    const n = ring.cqReady();
    for (let i = 0; i < n; i++) {
      const hi = ring.cqeDataHi(i);
      const lo = ring.cqeDataLo(i);
      const res = ring.cqeRes(i);
      if (hi === IO_CMD) this.onIoCmd(lo, res);
      else if (hi >= TARGET_USER_DATA) this.target.onCqe?.(lo, hi - TARGET_USER_DATA, res);
      else this.onInternal(lo, res);
    }
    ring.cqAdvance(n);
    this.target.flush?.();
    this.target.reap?.();
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

  private onInternal(which: number, res: number): void {
    if (which === KICK) {
      if (Atomics.load(this.control, 0) === QUEUE_STOP) this.stopRequested = true;
      else if (res >= 0 || res === -11) this.armRead(this.kickFd, KICK);
    } else if (which === TARGET_EVENT) {
      // The reap that follows this turn collects the completions; re-arm for the next ones.
      if (this.target.eventFd !== undefined) this.armRead(this.target.eventFd, TARGET_EVENT);
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
    this.inTarget++;
    const stats = this.stats;
    stats[QS.inFlight] = this.inTarget;
    switch (op) {
      case U.UBLK_IO_OP_READ:
        stats[QS.reads]++;
        stats[QS.readBytes] += length;
        break;
      case U.UBLK_IO_OP_WRITE:
        stats[QS.writes]++;
        stats[QS.writeBytes] += length;
        break;
      case U.UBLK_IO_OP_FLUSH:
        stats[QS.flushes]++;
        break;
      case U.UBLK_IO_OP_DISCARD:
        stats[QS.discards]++;
        stats[QS.discardBytes] += length;
        break;
      case U.UBLK_IO_OP_WRITE_ZEROES:
        stats[QS.writeZeroes]++;
        stats[QS.writeZeroesBytes] += length;
        break;
      default:
        stats[QS.otherOps]++;
    }
    let r: number | undefined | Promise<number>;
    try {
      r = this.target.queueIo(tag, op, flags, offset, length);
    } catch {
      r = -EIO;
    }
    if (typeof r === 'number') this.complete(tag, r);
    else if (r !== undefined) this.completeLater(tag, r);
  }

  private completeLater(tag: number, p: Promise<number>): void {
    p.then(
      (res) => this.complete(tag, typeof res === 'number' ? res : -EIO),
      () => this.complete(tag, -EIO),
    );
  }

  close(): void {
    this.target?.close?.();
    this.ring.close();
    this.descMem.free();
    this.bufMem.free();
    this.scratch.free();
  }
}
