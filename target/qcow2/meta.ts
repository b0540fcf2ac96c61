/**
 * The writable image's metadata, shared by every queue thread and the
 * metadata writer (docs/design.md, "qcow2: who changes the metadata").
 *
 * All of it lives in memory, in SharedArrayBuffers: the L1 table, every L2
 * entry (layer.ts), each host cluster's refcount, the refcount table. A
 * queue that must allocate takes the metadata lock, changes memory only
 * (no IO under the lock), and marks what it changed dirty; the metadata
 * writer (writeback.ts) puts dirty metadata on disk when the guest flushes,
 * in the order that keeps the image consistent at every instant:
 *
 *   data and refcount blocks → fdatasync → L2 tables → fdatasync → L1.
 *
 * A cluster that loses its last reference is not free at once: its
 * refcount drops only after a flush made the lost reference durable and
 * after every request that might still touch it has finished (the epochs
 * below), so no stale L2 entry on disk and no request in flight ever sees
 * it reused.
 */
import * as file from '../../sys/file.js';
import * as native from '../../sys/native.js';
import { compressedClusters, compressedExtent, entryHi, entryLo, entryOffset, getRefcount, L2_COMPRESSED, L2_COPIED, L2_ZERO, maxRefcount, setRefcount, type Qcow2Header, INCOMPAT_DIRTY, COMPAT_LAZY_REFCOUNTS } from './format.js';
import { type LayerData, mapValue } from './layer.js';
import { ENOSPC } from '../../sys/errno.js';

/** ctl[] words (Int32, Atomics). */
export const enum Ctl {
  LOCK = 0, // 0 free, 1 held, 2 held with waiters (a futex mutex)
  FLUSH_REQ, // flush generations asked for
  FLUSH_DONE, // flush generations done
  FAILED, // errno of a metadata write or fsync that failed (sticky), else 0
  STOP, // the device is closing: the writer flushes a last time and exits
  EPOCH, // see pin()
  DIRTY, // some metadata in memory is not on disk
  L1_DIRTY,
  REFTABLE_DIRTY,
  PENDING_HEAD, // pending frees [head, tail) in `pending`, as running counts
  PENDING_TAIL,
  DIRTY_BIT_ON_DISK, // lazy refcounts: the header's dirty bit is set
  COUNT,
}

/** num[] slots (Float64): sizes and counters. */
export const enum Num {
  HW = 0, // host clusters at or past this index were never used: zeros
  FREE_HINT, // no free cluster below this index
  FILE_LENGTH, // the file's length (grown ahead of allocation)
  REFTABLE_OFFSET, // the refcount table the header names
  REFTABLE_ENTRIES,
  NEW_REFTABLE_OFFSET, // a grown table not yet in the header (0: none)
  NEW_REFTABLE_ENTRIES,
  TAKEN_REFTABLE_OFFSET, // the grown table the writer is writing now (0: none)
  // Counters for `ublk stats`.
  ALLOCATED, // host clusters allocated
  COW, // clusters copied on write (backing, compressed, shared)
  FLUSHES, // metadata flushes done
  META_BYTES, // metadata bytes written
  FSYNCS,
  DEFERRED, // requests that waited for another's allocation of their cluster
  FREED, // host clusters freed
  LEAKED, // frees dropped (the pending list was full): space leaked, never data
  COUNT,
}

/** Queues the shared arrays have room for (ublk_drv: UBLK_MAX_NR_QUEUES). */
export const MAX_QUEUES = 4096;
/** Pending frees held at once; more are dropped (a leak). */
const PENDING_CAP = 1 << 16;
/** The file grows ahead of allocation by this much, so data writes seldom extend it. */
const GROW_BYTES = 8 << 20;


/** Everything a thread needs to share the writable image: plain numbers and SharedArrayBuffers. */
export interface MetaData {
  clusterBits: number;
  /** incompatible_features without the dirty bit (the compression type bit may be set). */
  incompatible: number;
  version: number;
  refcountOrder: number;
  lazyRefcounts: boolean;
  l1TableOffset: number;
  /** Buffered descriptor of the image: metadata IO, fallocate, ftruncate. */
  metaFd: number;
  ctl: Int32Array;
  num: Float64Array;
  /** Per host cluster. */
  refcounts: Uint32Array;
  /** Refcount block host offsets by refcount table index. */
  reftable: Float64Array;
  refblockDirty: Uint8Array;
  /** Per L1 index: the L2 table changed in memory. */
  l2Dirty: Uint8Array;
  /** Per guest cluster: an allocation (or zeroing) of it is in flight. */
  busy: Uint8Array;
  /** [host cluster, epoch] pairs, a ring of PENDING_CAP. */
  pending: Float64Array;
  /** Per queue: its eventfd + 1 (0: none), and how many of its requests wait for a busy cluster. */
  queueEfd: Int32Array;
  queueWaiting: Int32Array;
  /** Per queue, per epoch parity: requests in flight. */
  pins: Int32Array;
}

const shared = (bytes: number) => new SharedArrayBuffer(bytes);

/** Refcount table entries held in memory: twice `entries`, in whole clusters of the table. */
export function reftableCapacity(cs: number, entries: number): number {
  const perCluster = cs / 8;
  return Math.ceil((2 * entries) / perCluster) * perCluster;
}

export function newMetaData(L: LayerData, h: Qcow2Header, metaFd: number, hostCap: number): MetaData {
  const refcountOrder = h.refcountOrder;
  const cs = 2 ** L.clusterBits;
  const blockEntries = (cs * 8) / 2 ** refcountOrder;
  // Every entry of the table on disk, and room for a table that covers hostCap clusters twice over.
  const tableCap = reftableCapacity(cs, Math.max((h.refcountTableClusters * cs) / 8, Math.ceil(hostCap / blockEntries) + 1));
  return {
    clusterBits: L.clusterBits,
    incompatible: Number(h.incompatible & ~INCOMPAT_DIRTY),
    version: L.version,
    refcountOrder,
    lazyRefcounts: (h.compatible & COMPAT_LAZY_REFCOUNTS) !== 0n,
    l1TableOffset: h.l1TableOffset,
    metaFd,
    ctl: new Int32Array(shared(Ctl.COUNT * 4)),
    num: new Float64Array(shared(Num.COUNT * 8)),
    refcounts: new Uint32Array(shared(hostCap * 4)),
    reftable: new Float64Array(shared(tableCap * 8)),
    refblockDirty: new Uint8Array(shared(tableCap)),
    l2Dirty: new Uint8Array(shared(L.l1.length)),
    busy: new Uint8Array(shared(L.map.length)),
    pending: new Float64Array(shared(PENDING_CAP * 16)),
    queueEfd: new Int32Array(shared(MAX_QUEUES * 4)),
    queueWaiting: new Int32Array(shared(MAX_QUEUES * 4)),
    pins: new Int32Array(shared(MAX_QUEUES * 8)),
  };
}

/** The operations on MetaData, in whichever thread holds it. Methods marked "locked" need lock() held. */
export class Meta {
  readonly d: MetaData;
  readonly L: LayerData;
  readonly cs: number;
  readonly blockEntries: number;
  readonly maxRefcount: number;
  private readonly ctl: Int32Array;
  private readonly one = new BigUint64Array([1n]);

  constructor(d: MetaData, L: LayerData) {
    this.d = d;
    this.L = L;
    this.cs = 2 ** d.clusterBits;
    this.blockEntries = (this.cs * 8) / 2 ** d.refcountOrder;
    this.maxRefcount = Math.min(maxRefcount(d.refcountOrder), 2 ** 32 - 1);
    this.ctl = d.ctl;
  }

  // A futex mutex (Drepper, "Futexes Are Tricky", mutex #2). Held for
  // memory changes only, never across IO; Atomics make every change made
  // under it visible to the next holder.
  lock(): void {
    const ctl = this.ctl;
    let c = Atomics.compareExchange(ctl, Ctl.LOCK, 0, 1);
    if (c === 0) return;
    if (c !== 2) c = Atomics.exchange(ctl, Ctl.LOCK, 2);
    while (c !== 0) {
      Atomics.wait(ctl, Ctl.LOCK, 2);
      c = Atomics.exchange(ctl, Ctl.LOCK, 2);
    }
  }

  unlock(): void {
    if (Atomics.sub(this.ctl, Ctl.LOCK, 1) !== 1) {
      Atomics.store(this.ctl, Ctl.LOCK, 0);
      Atomics.notify(this.ctl, Ctl.LOCK, 1);
    }
  }

  /** `fn` under the lock. For the writer and open(); queues call lock()/unlock() themselves, without a closure per request. */
  locked<T>(fn: () => T): T {
    this.lock();
    try {
      return fn();
    } finally {
      this.unlock();
    }
  }

  /**
   * Epochs: a request that may touch host clusters pins the current epoch
   * (counted per queue and parity) before it looks at the map, and unpins
   * when it ends. The writer moves the epoch on only when no request of
   * the other parity is in flight, so at epoch E + 2 every request pinned
   * at E or before has ended: a cluster freed at E may then be reused.
   * Returns the parity to unpin with.
   */
  pin(q: number): number {
    const pins = this.d.pins;
    for (;;) {
      const e = Atomics.load(this.ctl, Ctl.EPOCH);
      const p = e & 1;
      Atomics.add(pins, 2 * q + p, 1);
      if (Atomics.load(this.ctl, Ctl.EPOCH) === e) return p;
      Atomics.sub(pins, 2 * q + p, 1); // the writer moved on meanwhile: pin the new epoch
    }
  }

  unpin(q: number, parity: number): void {
    Atomics.sub(this.d.pins, 2 * q + parity, 1);
  }

  /** The writer: moves the epoch on if nothing of the next parity is in flight. */
  advanceEpoch(): boolean {
    const e = Atomics.load(this.ctl, Ctl.EPOCH);
    const next = (e + 1) & 1;
    const pins = this.d.pins;
    for (let q = 0; q < MAX_QUEUES; q++) if (Atomics.load(pins, 2 * q + next) !== 0) return false;
    Atomics.store(this.ctl, Ctl.EPOCH, e + 1);
    return true;
  }

  private markRefblock(host: number): void {
    this.d.refblockDirty[Math.floor(host / this.blockEntries)] = 1;
    this.ctl[Ctl.DIRTY] = 1;
  }

  /**
   * Locked. Allocates up to `n` contiguous host clusters (at least one),
   * each with refcount 1; `this.count` gets how many. Returns the first
   * index, or -ENOSPC. `fresh`: they lie past everything ever used, so the
   * file reads zeros there.
   */
  count = 0;
  fresh = false;

  allocate(n: number): number {
    const num = this.d.num;
    const refcounts = this.d.refcounts;
    const hw = num[Num.HW];
    let start = num[Num.FREE_HINT];
    while (start < hw && refcounts[start] !== 0) start++;
    let count = 1;
    while (count < n && start + count < refcounts.length && (start + count >= hw || refcounts[start + count] === 0)) count++;
    if (start + count > refcounts.length) return -ENOSPC;
    for (let i = start; i < start + count; i++) {
      refcounts[i] = 1;
      this.markRefblock(i);
    }
    this.fresh = start >= hw;
    if (start + count > hw) {
      const r = this.grow(start + count);
      if (r < 0) {
        this.unallocate(start, count);
        return r;
      }
    }
    num[Num.FREE_HINT] = start + count;
    num[Num.ALLOCATED] += count;
    this.count = count;
    for (let i = start; i < start + count; i++) {
      const r = this.ensureRefblock(i);
      if (r < 0) {
        for (let j = start; j < start + count; j++) refcounts[j] = 0;
        return r;
      }
    }
    return start;
  }

  /** Locked. Clusters from allocate() that were never linked: free again at once (nothing ever referred to them). */
  unallocate(start: number, n: number): void {
    const refcounts = this.d.refcounts;
    for (let i = start; i < start + n; i++) {
      refcounts[i] = 0;
      this.markRefblock(i);
    }
    if (start < this.d.num[Num.FREE_HINT]) this.d.num[Num.FREE_HINT] = start;
  }

  /**
   * Locked. Raises the high water mark, growing the file ahead of it
   * (never shrinking it): the one system call made under the lock, and a
   * rare one. Returns 0 or -errno.
   */
  private grow(hw: number): number {
    const num = this.d.num;
    const need = hw * this.cs;
    if (need > num[Num.FILE_LENGTH]) {
      const length = Math.ceil((need + GROW_BYTES) / this.cs) * this.cs;
      const r = native.ftruncate(this.d.metaFd, length);
      if (r < 0) return r;
      num[Num.FILE_LENGTH] = length;
    }
    num[Num.HW] = hw;
    return 0;
  }

  /** Locked. Refcount blocks for every cluster below `hw` that has a refcount (after rebuilding refcounts). */
  ensureRefblocks(hw: number): number {
    for (let i = 0; i < hw; i++) {
      if (this.d.refcounts[i] === 0) continue;
      const r = this.ensureRefblock(i);
      if (r < 0) return r;
    }
    return 0;
  }

  /** Locked. Makes sure host cluster `i`'s refcount block exists in the refcount table (allocating it). */
  private ensureRefblock(i: number): number {
    const d = this.d;
    const b = Math.floor(i / this.blockEntries);
    if (d.reftable[b] > 0) return 0;
    if (b >= d.reftable.length) return -ENOSPC;
    const entries = d.num[Num.NEW_REFTABLE_OFFSET] > 0 ? d.num[Num.NEW_REFTABLE_ENTRIES] : d.num[Num.REFTABLE_ENTRIES];
    if (b >= entries) {
      const r = this.growReftable(b);
      if (r < 0) return r;
      if (d.reftable[b] > 0) return 0; // the new table's own clusters needed block b too
    }
    const c = this.allocateOne();
    if (c < 0) return c;
    d.reftable[b] = c * this.cs;
    d.refblockDirty[b] = 1;
    this.ctl[Ctl.REFTABLE_DIRTY] = 1;
    return this.ensureRefblock(c); // its own block: b itself (self-describing) or an older one
  }

  private allocateOne(): number {
    const num = this.d.num;
    const refcounts = this.d.refcounts;
    const hw = num[Num.HW];
    let c = num[Num.FREE_HINT];
    while (c < hw && refcounts[c] !== 0) c++;
    if (c >= refcounts.length) return -ENOSPC;
    if (c + 1 > hw) {
      const r = this.grow(c + 1);
      if (r < 0) return r;
    }
    refcounts[c] = 1;
    this.markRefblock(c);
    num[Num.FREE_HINT] = c + 1;
    num[Num.ALLOCATED]++;
    return c;
  }

  /**
   * Locked. A refcount table big enough for block index `b`, at the end of
   * the file; the header names it once the writer has written it
   * (writeback.ts). A grown table that a newer one supersedes before the
   * header named it is freed at once, unless the writer is writing it now:
   * then the header is about to name it, and it goes when the header moves on.
   */
  private growReftable(b: number): number {
    const d = this.d;
    const num = d.num;
    const perCluster = this.cs / 8;
    const now = Math.max(num[Num.REFTABLE_ENTRIES], num[Num.NEW_REFTABLE_ENTRIES]);
    const entries = Math.min(Math.ceil(Math.max(2 * now, b + 1) / perCluster) * perCluster, d.reftable.length);
    if (entries <= b) return -ENOSPC;
    const clusters = entries / perCluster;
    const start = num[Num.HW];
    if (start + clusters > d.refcounts.length) return -ENOSPC;
    const r = this.grow(start + clusters);
    if (r < 0) return r;
    const superseded = num[Num.NEW_REFTABLE_OFFSET];
    if (superseded > 0 && superseded !== num[Num.TAKEN_REFTABLE_OFFSET]) {
      this.unallocate(superseded / this.cs, num[Num.NEW_REFTABLE_ENTRIES] / perCluster); // nothing ever named it
    }
    for (let i = start; i < start + clusters; i++) {
      d.refcounts[i] = 1;
      this.markRefblock(i);
    }
    num[Num.NEW_REFTABLE_OFFSET] = start * this.cs;
    num[Num.NEW_REFTABLE_ENTRIES] = entries;
    this.ctl[Ctl.REFTABLE_DIRTY] = 1;
    for (let i = start; i < start + clusters; i++) {
      const e = this.ensureRefblock(i);
      if (e < 0) return e;
    }
    return 0;
  }

  /** Locked. The header names the table at `offset` now (writeback.ts): the one it named before loses its reference. */
  switchReftable(offset: number, entries: number): void {
    const num = this.d.num;
    const first = num[Num.REFTABLE_OFFSET] / this.cs;
    const clusters = (num[Num.REFTABLE_ENTRIES] * 8) / this.cs;
    for (let c = first; c < first + clusters; c++) this.releaseCluster(c);
    num[Num.REFTABLE_OFFSET] = offset;
    num[Num.REFTABLE_ENTRIES] = entries;
    if (num[Num.NEW_REFTABLE_OFFSET] === offset) {
      num[Num.NEW_REFTABLE_OFFSET] = 0;
      num[Num.NEW_REFTABLE_ENTRIES] = 0;
    }
  }

  /** Locked. The L2 table that holds guest cluster g, allocated (empty) if there is none. */
  ensureL2(g: number): number {
    const L = this.L;
    const t = Math.floor(g / L.l2Entries);
    if (L.l1[t] > 0) return 0;
    const c = this.allocateOne();
    if (c < 0) return c;
    const r = this.ensureRefblock(c);
    if (r < 0) return r;
    // The table's entries in memory are already zero (all unallocated); it is written before the L1 that names it.
    L.l1[t] = c * this.cs;
    this.d.l2Dirty[t] = 1;
    this.ctl[Ctl.L1_DIRTY] = 1;
    this.ctl[Ctl.DIRTY] = 1;
    return 0;
  }

  /** Locked. Sets guest cluster g's L2 entry (and map). */
  setEntry(g: number, hi: number, lo: number): void {
    const L = this.L;
    L.l2[2 * g] = hi;
    L.l2[2 * g + 1] = lo;
    // An Atomics store: it is ordered before the epoch a release records next (see pin()).
    Atomics.store(L.map, g, mapValue(L, g, this.cs, (h) => this.d.refcounts[h] === 1));
    this.d.l2Dirty[Math.floor(g / L.l2Entries)] = 1;
    this.ctl[Ctl.DIRTY] = 1;
  }

  /** Locked. Guest cluster g now maps to host cluster `host`, written in place from now on. */
  link(g: number, host: number): void {
    this.setEntry(g, entryHi(host * this.cs, L2_COPIED), entryLo(host * this.cs, 0));
  }

  /** Locked. Reads as zeros (version 3), keeping `host` (> 0) allocated to it when given. */
  setZero(g: number, host: number): void {
    if (host > 0) this.setEntry(g, entryHi(host * this.cs, L2_COPIED), entryLo(host * this.cs, L2_ZERO));
    else this.setEntry(g, 0, L2_ZERO);
  }

  /** Locked. Drops the references the old entry [hi, lo] held (they are freed later: see the file comment). */
  release(hi: number, lo: number): void {
    if (hi & L2_COMPRESSED) {
      const [first, last] = compressedClusters(compressedExtent(hi, lo, this.d.clusterBits), this.d.clusterBits);
      for (let c = first; c <= last; c++) this.releaseCluster(c);
      return;
    }
    const off = entryOffset(hi, lo);
    if (off > 0) this.releaseCluster(off / this.cs);
  }

  /** Locked. Host cluster `host` loses one reference, once that is durable and no request can still touch it. */
  releaseCluster(host: number): void {
    const ctl = this.ctl;
    const tail = ctl[Ctl.PENDING_TAIL];
    if (tail - ctl[Ctl.PENDING_HEAD] >= PENDING_CAP) {
      this.d.num[Num.LEAKED]++;
      return;
    }
    const at = 2 * (tail % PENDING_CAP);
    this.d.pending[at] = host;
    this.d.pending[at + 1] = Atomics.load(ctl, Ctl.EPOCH);
    ctl[Ctl.PENDING_TAIL] = tail + 1;
  }

  /** Locked. Frees what is pending below `coveredTail` (a flush made it durable) and old enough; returns how many. */
  applyFrees(coveredTail: number): number {
    const ctl = this.ctl;
    const epoch = Atomics.load(ctl, Ctl.EPOCH);
    let head = ctl[Ctl.PENDING_HEAD];
    let n = 0;
    while (head < coveredTail) {
      const at = 2 * (head % PENDING_CAP);
      if (this.d.pending[at + 1] + 2 > epoch) break;
      this.dropRef(this.d.pending[at]);
      head++;
      n++;
    }
    ctl[Ctl.PENDING_HEAD] = head;
    this.d.num[Num.FREED] += n;
    return n;
  }

  /** Locked. One reference less; a cluster at 0 is free for allocate(). */
  private dropRef(host: number): void {
    const refcounts = this.d.refcounts;
    if (refcounts[host] === 0) return;
    refcounts[host]--;
    this.markRefblock(host);
    if (refcounts[host] === 0 && host < this.d.num[Num.FREE_HINT]) this.d.num[Num.FREE_HINT] = host;
  }

  /** Wakes the queues that have requests waiting for a busy cluster (not `self`: it retries on its own). */
  wakeWaiters(self: number): void {
    const d = this.d;
    for (let q = 0; q < MAX_QUEUES; q++) {
      const efd = d.queueEfd[q];
      if (efd === 0) continue;
      if (q !== self && Atomics.load(d.queueWaiting, q) > 0) this.signal(efd - 1);
    }
  }

  /** Wakes every queue (the writer, after a flush). */
  wakeAll(): void {
    const d = this.d;
    for (let q = 0; q < MAX_QUEUES; q++) {
      const efd = d.queueEfd[q];
      if (efd !== 0) this.signal(efd - 1);
    }
  }

  private signal(fd: number): void {
    native.write(fd, this.one, 8);
  }
}

/** The refcounts of refcount block `b`, encoded as on disk. */
export function encodeRefblock(d: MetaData, b: number, cs: number, blockEntries: number, out: Uint8Array): void {
  out.fill(0);
  const first = b * blockEntries;
  const refcounts = d.refcounts;
  const order = d.refcountOrder;
  for (let i = 0; i < blockEntries && first + i < refcounts.length; i++) {
    const r = refcounts[first + i];
    if (r !== 0) setRefcount(out, i, order, r);
  }
}

/** Reads refcount block `block` (cluster bytes) into refcounts[first…]; false when a refcount does not fit 32 bits. */
export function decodeRefblock(block: Uint8Array, order: number, refcounts: Uint32Array, first: number, entries: number): boolean {
  for (let i = 0; i < entries && first + i < refcounts.length; i++) {
    const r = getRefcount(block, i, order);
    if (r > 0xffffffff) return false;
    refcounts[first + i] = r;
  }
  return true;
}
