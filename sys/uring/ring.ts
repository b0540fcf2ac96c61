import * as native from '../native.js';
import { check } from '../error.js';
import { NativeMemory, MAP_POPULATE, MAP_SHARED, PROT_READ, PROT_WRITE } from '../memory.js';
import {
  IORING_ENTER_GETEVENTS,
  IORING_FEAT_SINGLE_MMAP,
  IORING_OFF_CQ_RING,
  IORING_OFF_SQES,
  IORING_OFF_SQ_RING,
  IORING_REGISTER_FILES,
  IORING_SETUP_CQE32,
  IORING_SETUP_CQSIZE,
  IORING_SETUP_SQE128,
  IORING_SQ_TASKRUN,
} from './constants.js';
import { io_cqring_offsets as CQO, io_sqring_offsets as SQO, io_uring_params as P, io_uring_sqe } from './layout.js';
import { EINTR } from '../errno.js';


export interface IoUringOptions {
  /** IORING_SETUP_* flags; SQE128 and CQE32 select the big entries. */
  flags?: number;
  /** CQ size (IORING_SETUP_CQSIZE); the kernel's default is twice the SQ. */
  cqEntries?: number;
}

/**
 * One io_uring, set up with raw syscalls and mapped once. SQEs are handed
 * out by index (`getSqe()`), filled by the builders in prep.ts through
 * `sqe32`/`sqe8`, published by `submit*()`. CQEs are read in place with
 * `cqeRes(i)` … for i in [0, cqReady()) and released with `cqAdvance(n)`.
 * Nothing here allocates after construction.
 */
export class IoUring {
  readonly fd: number;
  readonly flags: number;
  readonly features: number;
  readonly sqEntries: number;
  readonly cqEntries: number;
  /** Bytes per SQE: 64, or 128 with SQE128. */
  readonly sqeSize: number;
  /** u32 words per SQE / per CQE. */
  readonly sqeWords: number;
  private readonly cqeWords: number;

  /** The SQE array: u32 and u8 views over the same native memory. */
  readonly sqe32: Uint32Array;
  readonly sqe8: Uint8Array;
  readonly sqe16: Uint16Array;

  private readonly sqMask: number;
  private readonly cqMask: number;
  // Shared ring words, as u32 indexes; the kernel writes the k* ones.
  private readonly sq32: Uint32Array;
  private readonly khead: number;
  private readonly ktail: number;
  private readonly kflags: number;
  private readonly cq32: Uint32Array;
  private readonly cqi32: Int32Array;
  private readonly cqKhead: number;
  private readonly cqKtail: number;
  private readonly cqesWord: number;

  /** Our SQ tail: SQEs handed out but maybe not yet published. */
  private sqeTail = 0;
  /** SQEs getSqe() can hand out without reading the kernel's head again (a lower bound of sqSpace()). */
  private sqFree = 0;
  /** Our CQ head: CQEs before it were consumed. */
  private cqHead = 0;

  private readonly maps: NativeMemory[] = [];
  private closed = false;

  constructor(entries: number, options: IoUringOptions = {}) {
    let flags = options.flags ?? 0;
    const params = new Uint8Array(P.SIZE);
    const pv = new DataView(params.buffer);
    if (options.cqEntries !== undefined) {
      flags |= IORING_SETUP_CQSIZE;
      pv.setUint32(P.cq_entries, options.cqEntries, true);
    }
    pv.setUint32(P.flags, flags, true);
    this.fd = check(native.io_uring_setup(entries, params), 'io_uring_setup');
    this.flags = flags;
    try {
      this.features = pv.getUint32(P.features, true);
      this.sqEntries = pv.getUint32(P.sq_entries, true);
      this.cqEntries = pv.getUint32(P.cq_entries, true);
      this.sqeSize = flags & IORING_SETUP_SQE128 ? io_uring_sqe.SIZE128 : io_uring_sqe.SIZE;
      this.sqeWords = this.sqeSize >> 2;
      this.cqeWords = flags & IORING_SETUP_CQE32 ? 8 : 4;
      const sq = (f: number) => pv.getUint32(P.sq_off + f, true);
      const cq = (f: number) => pv.getUint32(P.cq_off + f, true);

      const sqRingSize = sq(SQO.array) + this.sqEntries * 4;
      const cqRingSize = cq(CQO.cqes) + this.cqEntries * this.cqeWords * 4;
      const prot = PROT_READ | PROT_WRITE;
      const mapFlags = MAP_SHARED | MAP_POPULATE;
      let sqRing: NativeMemory;
      let cqRing: NativeMemory;
      if (this.features & IORING_FEAT_SINGLE_MMAP) {
        sqRing = cqRing = this.map(Math.max(sqRingSize, cqRingSize), prot, mapFlags, IORING_OFF_SQ_RING);
      } else {
        sqRing = this.map(sqRingSize, prot, mapFlags, IORING_OFF_SQ_RING);
        cqRing = this.map(cqRingSize, prot, mapFlags, IORING_OFF_CQ_RING);
      }
      const sqes = this.map(this.sqEntries * this.sqeSize, prot, mapFlags, IORING_OFF_SQES);

      this.sq32 = new Uint32Array(sqRing.buffer);
      this.khead = sq(SQO.head) >> 2;
      this.ktail = sq(SQO.tail) >> 2;
      this.kflags = sq(SQO.flags) >> 2;
      this.sqMask = this.sq32[sq(SQO.ring_mask) >> 2];
      this.cq32 = new Uint32Array(cqRing.buffer);
      this.cqi32 = new Int32Array(cqRing.buffer);
      this.cqKhead = cq(CQO.head) >> 2;
      this.cqKtail = cq(CQO.tail) >> 2;
      this.cqesWord = cq(CQO.cqes) >> 2;
      this.cqMask = this.cq32[cq(CQO.ring_mask) >> 2];

      this.sqe32 = new Uint32Array(sqes.buffer);
      this.sqe16 = new Uint16Array(sqes.buffer);
      this.sqe8 = new Uint8Array(sqes.buffer);

      // SQ slot i always names SQE i, so the index array is written once.
      const array = sq(SQO.array) >> 2;
      for (let i = 0; i < this.sqEntries; i++) this.sq32[array + i] = i;
      this.sqeTail = this.sq32[this.ktail];
      this.cqHead = this.cq32[this.cqKhead];
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private map(size: number, prot: number, flags: number, offset: number): NativeMemory {
    const m = NativeMemory.map(size, prot, flags, this.fd, offset);
    this.maps.push(m);
    return m;
  }

  /** SQEs that can still be handed out before the kernel consumes some. */
  sqSpace(): number {
    // Acquire of the kernel's SQ head: pairs with smp_store_release(&rings->sq.head)
    // in io_commit_sqring(); orders it before we overwrite consumed SQEs.
    return this.sqEntries - ((this.sqeTail - Atomics.load(this.sq32, this.khead)) >>> 0);
  }

  /**
   * The index of a zeroed SQE to fill, or -1 when the SQ is full (submit
   * first). Builders in prep.ts take this index.
   */
  getSqe(): number {
    // The kernel's head only moves forward, so space counted at the last
    // look is there still: look again (an Atomics.load, a call into V8's
    // runtime) only when that is used up.
    if (this.sqFree === 0) {
      this.sqFree = this.sqSpace();
      if (this.sqFree === 0) return -1;
    }
    this.sqFree--;
    const idx = this.sqeTail & this.sqMask;
    this.sqeTail = (this.sqeTail + 1) >>> 0;
    const sqe32 = this.sqe32;
    const end = (idx + 1) * this.sqeWords;
    // A plain loop, not fill(): TypedArray.prototype.fill is a call into
    // V8's C++ runtime, which costs more than the 16 stores it would save.
    for (let w = idx * this.sqeWords; w < end; w++) sqe32[w] = 0;
    return idx;
  }

  /** SQEs handed out and not yet consumed by the kernel. */
  sqPending(): number {
    return (this.sqeTail - Atomics.load(this.sq32, this.khead)) >>> 0;
  }

  private publish(): number {
    // Release of the SQ tail: orders the SQE stores before it; pairs with
    // smp_load_acquire(&rings->sq.tail) in io_sqring_entries() (see the
    // ordering comment on struct io_rings in io_uring_types.h).
    Atomics.store(this.sq32, this.ktail, this.sqeTail);
    return this.sqPending();
  }

  /**
   * io_uring_enter(2), retried on EINTR (a signal is never "no completions").
   * Returns the SQEs consumed or -errno (EAGAIN/EBUSY: try again after
   * reaping).
   */
  enter(toSubmit: number, minComplete: number, flags: number): number {
    for (;;) {
      const r = native.io_uring_enter(this.fd, toSubmit, minComplete, flags);
      if (r !== -EINTR) return r;
      // The SQEs were consumed before the wait was interrupted; only wait again.
      toSubmit = this.sqPending();
    }
  }

  /** Publishes the SQEs and hands them to the kernel without waiting. */
  submit(): number {
    const n = this.publish();
    const taskrun = this.taskrunPending();
    if (n === 0 && !taskrun) return 0;
    // GETEVENTS with min_complete 0 runs pending task work without waiting.
    return this.enter(n, 0, taskrun ? IORING_ENTER_GETEVENTS : 0);
  }

  /** Publishes the SQEs and waits for at least `waitNr` CQEs, in one syscall. */
  submitAndWait(waitNr: number): number {
    const n = this.publish();
    return this.enter(n, waitNr, IORING_ENTER_GETEVENTS);
  }

  /**
   * With COOP_TASKRUN|TASKRUN_FLAG the kernel sets IORING_SQ_TASKRUN when
   * task work (such as ublk's request CQEs) waits to run: a polling thread
   * must enter the kernel or never see those CQEs.
   */
  taskrunPending(): boolean {
    return (Atomics.load(this.sq32, this.kflags) & IORING_SQ_TASKRUN) !== 0;
  }

  /** CQEs ready to read, at positions 0 … n-1 from the head. */
  cqReady(): number {
    // Acquire of the CQ tail: pairs with smp_store_release(&rings->cq.tail)
    // in io_commit_cqring(); CQE reads below cannot move before it.
    return (Atomics.load(this.cq32, this.cqKtail) - this.cqHead) >>> 0;
  }

  private cqeWord(i: number): number {
    return this.cqesWord + ((this.cqHead + i) & this.cqMask) * this.cqeWords;
  }

  cqeRes(i: number): number {
    return this.cqi32[this.cqeWord(i) + 2];
  }
  cqeFlags(i: number): number {
    return this.cq32[this.cqeWord(i) + 3];
  }
  /** Low and high halves of cqe.user_data. */
  cqeDataLo(i: number): number {
    return this.cq32[this.cqeWord(i)];
  }
  cqeDataHi(i: number): number {
    return this.cq32[this.cqeWord(i) + 1];
  }

  /** Releases n CQEs to the kernel. */
  cqAdvance(n: number): void {
    this.cqHead = (this.cqHead + n) >>> 0;
    // Release of the CQ head: our CQE loads happen before the kernel may
    // reuse the slots; pairs with the control dependency on cq.head in
    // io_get_cqe_overflow() / __io_cqring_events().
    Atomics.store(this.cq32, this.cqKhead, this.cqHead);
  }

  /**
   * IORING_REGISTER_FILES: fds[i] becomes fixed file i, for SQEs with
   * IOSQE_FIXED_FILE and sqe.fd = i, which skip the fget/fput of a file
   * table lookup per SQE. Once per ring; closing the ring drops them.
   */
  registerFiles(fds: readonly number[]): void {
    check(native.io_uring_register(this.fd, IORING_REGISTER_FILES, Int32Array.from(fds), fds.length), 'io_uring_register');
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const m of this.maps) m.free();
    this.maps.length = 0;
    if (this.fd >= 0) native.close(this.fd);
  }
}

