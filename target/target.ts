/**
 * What serves the IO. A target is a handful of functions, as in ublksrv and
 * kublk: `open` (daemon main thread, once per device: check options, open
 * the backing, describe the device) returns that device's own instance,
 * which owns what it opened until its `close`; `createQueue` (each queue's
 * worker thread) serves the requests of one queue from what the instance
 * handed its queues (`queueData`). Targets live in modules so a worker thread
 * can load them by name (built-ins, see registry.ts) or by module URL (your own).
 */
import type { IoUring } from '../sys/uring/ring.js';

/**
 * The user_data high word of SQEs a target puts on the queue ring, OR-ed
 * with the target's own kind (below 2^30): it routes their CQEs back to
 * `onCqe` (see sys/uring/user-data.ts).
 */
export { USER_DATA_TARGET as TARGET_USER_DATA } from '../sys/uring/user-data.js';

/** A bad option or an unusable backing: one line for the user, no stack. */
export class TargetError extends Error {
  /** Set when the backing is held by another device: what is held, as `exclusive` names it. */
  readonly held?: string;
  constructor(message: string, options?: { held?: string }) {
    super(message);
    this.name = 'TargetError';
    if (options?.held !== undefined) this.held = options.held;
  }
}

/** How the target wants the block device to look (becomes ublk_params). */
export interface TargetDescription {
  /** Device size in bytes: a multiple of the logical block size. */
  size: number;
  /** 512 (default) … 4096. */
  logicalBlockSize?: number;
  /** Default 4096 (at least the logical block size). */
  physicalBlockSize?: number;
  readOnly?: boolean;
  rotational?: boolean;
  /** A write cache that FLUSH empties (UBLK_ATTR_VOLATILE_CACHE): the kernel then sends FLUSH. */
  volatileCache?: boolean;
  /** Honours FUA writes (UBLK_ATTR_FUA). */
  fua?: boolean;
  /** Supports DISCARD and WRITE_ZEROES with these limits (absent: neither is sent). */
  discard?: { granularity: number; maxDiscardSectors: number; maxWriteZeroesSectors: number };
  /** The largest request the backing takes, in bytes (a 4K multiple): the device's max IO size is no larger. */
  maxIoSize?: number;
  /** The device gets no more queues than `max` (`reason` tells the user why, when they asked for more). */
  queueLimit?: { max: number; reason: string };
  /** Shown by `ublk list` and kept in the state file (backing file, engine…). */
  info?: Record<string, string | number | boolean>;
  /** Things the user should know (e.g. a fallback to buffered IO); `ublk add` prints them on stderr. */
  warnings?: string[];
  /** Handed to every queue's createQueue() (structured-cloned into the worker). */
  queueData?: unknown;
  /**
   * What this device holds that no second ublk-ts device may hold while it
   * exists, e.g. the canonical path of a backing file. A --recoverable
   * device keeps its claim while it waits for `ublk recover`.
   */
  exclusive?: string[];
}

/**
 * One device's side of a target, in the daemon's main thread: what open()
 * returns. It owns what it opened (a backing file…), so two devices of the
 * same target in one process never share state.
 */
export interface TargetDevice extends TargetDescription {
  /** What `ublk stats` shows of the queues' statsBuffers (one per queue, null where none). */
  stats?(buffers: (SharedArrayBuffer | null)[]): Record<string, unknown>;
  /** Releases what open() took, once: after the device is gone, or when creating it failed. May finish asynchronously. */
  close?(): void | Promise<void>;
}

/** Bytes of QueueContext.scratch. */
export const SCRATCH_BYTES = 64 * 1024;

/** What a queue worker gives its target. */
export interface QueueContext {
  readonly devId: number;
  readonly qId: number;
  readonly depth: number;
  /** Bytes of each tag's buffer (the largest request). */
  readonly maxIoSize: number;
  /** The queue's io_uring, for targets that issue their own SQEs (user_data high word TARGET_USER_DATA | kind). */
  readonly ring: IoUring;
  /** Native address of tag's 4 KiB-aligned IO buffer: the kernel copies write data there before queueIo, read data from there after complete. */
  bufferAddr(tag: number): number;
  /** The same buffer as bytes (maxIoSize long, created once). */
  buffer(tag: number): Uint8Array;
  /**
   * SCRATCH_BYTES of the target's own (a receive buffer, say), at native
   * address scratchAddr, in the same mapping as the tag buffers (after
   * them): copyFromScratch() moves bytes from it into a tag's buffer. It
   * lives as long as the queue's ring, so SQEs may still write there.
   */
  readonly scratch: Uint8Array;
  readonly scratchAddr: number;
  /**
   * Copies n bytes at scratch[from] to tag's buffer at `offset`. A V8
   * builtin on one ArrayBuffer: no native call, nothing allocated (a native
   * memcpy's two addresses above 2^31 are two new HeapNumbers every call).
   */
  copyFromScratch(tag: number, offset: number, from: number, n: number): void;
  /** Ends request `tag` with bytes done or -errno. Exactly once per queueIo that returned undefined. */
  complete(tag: number, res: number): void;
  /** An SQE on the queue ring (submitting first if the SQ is full); throws a QueueError if the ring takes none. */
  getSqe(): number;
}

/** The server of one queue, living in that queue's worker thread. */
export interface TargetQueue {
  /**
   * Serve one request: op is UBLK_IO_OP_*, flags UBLK_IO_F_*, offset and
   * length in bytes. Return bytes or -errno to complete at once, undefined
   * to complete later through ctx.complete(), or a promise of the result.
   * A READ or WRITE that did less than `length` completes that part, and
   * ublk_drv asks again for the rest; 0 bytes is an error (EIO). A throw
   * or a rejected promise is a bug: the request fails with EIO and the
   * queue stops with an error that names it.
   */
  queueIo(tag: number, op: number, flags: number, offset: number, length: number): number | undefined | Promise<number>;
  /** After a batch of requests was queued: submit what was plugged. */
  flush?(): void;
  /** Each loop turn: collect finished IO (and ctx.complete it). */
  reap?(): void;
  /** Cheap check for finished IO, for the adaptive poller. */
  hasCompletions?(): boolean;
  /** An eventfd that signals finished IO; the queue waits on it together with new requests. */
  readonly eventFd?: number;
  /**
   * The eventfd is the device's, signalled for every queue's IO: the queue
   * polls it only while it has requests in the target, so an idle queue is
   * not woken by the others' completions.
   */
  readonly eventFdShared?: boolean;
  /** A CQE for an SQE this target put on the queue ring. */
  onCqe?(lo: number, kind: number, res: number): void;
  /** Counters the queue's daemon may read from another thread (see Target.describeStats). */
  readonly statsBuffer?: SharedArrayBuffer;
  /** IO still in the target's hands (the queue drains it before exiting). */
  inFlight?(): number;
  close?(): void;
}

export interface Target<Options = Record<string, unknown>> {
  readonly name: string;
  /**
   * True when queueIo never returns a promise: the queue thread may then
   * block in io_uring_enter between batches (the fastest loop). Leave unset
   * for targets that complete through promises or timers.
   */
  readonly sync?: boolean;
  /**
   * Daemon main thread, once per device: validate, open the backing,
   * describe the device. Throw TargetError for bad input. The instance
   * returned is that device's alone (its close() releases only its backing).
   */
  open(options: Options): TargetDevice | Promise<TargetDevice>;
  /**
   * Queue worker thread: the server of one queue of one device. It runs in
   * another thread than open(), so it sees the device only through the
   * instance's queueData (structured-cloned).
   */
  createQueue(ctx: QueueContext, queueData: unknown): TargetQueue | Promise<TargetQueue>;
}
