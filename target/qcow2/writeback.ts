/**
 * Puts the dirty metadata of a writable qcow2 image on disk, in the order
 * that keeps the image consistent whenever the process dies (a leak is
 * possible, a corruption is not):
 *
 *   1. refcount blocks (and a grown refcount table), then fdatasync: the
 *      data of every write that completed and the refcounts of every
 *      cluster the next steps point to are durable;
 *   2. the header names a grown refcount table, or the refcount table
 *      changes in place (naming the new blocks), fdatasync;
 *   3. L2 tables, fdatasync: they point only at durable data;
 *   4. the L1 table (only when it changed), fdatasync: it points only at
 *      durable L2 tables.
 *   5. clusters whose last reference the L2 tables just dropped may now be
 *      freed (Meta.applyFrees; their refcounts go out with the next flush).
 *
 * With lazy refcounts (compatible bit 0) steps 1-2 wait for the last flush,
 * and the header's dirty bit says so meanwhile, as in qemu.
 * Runs in the metadata writer thread, or in the daemon's main thread while
 * no queue runs (open, close). Memory is copied under the lock; IO happens
 * outside it, so queues allocate while this writes.
 */
import * as file from '../../sys/file.js';
import { HDR_INCOMPATIBLE, HDR_REFCOUNT_TABLE_OFFSET, INCOMPAT_DIRTY, L2_COPIED, entryHi, entryLo } from './format.js';
import { Ctl, Meta, Num, encodeRefblock } from './meta.js';

interface Snapshot {
  refblocks: [index: number, bytes: Uint8Array][];
  /** A grown table for the header, or the table rewritten in place. */
  reftable: { offset: number; entries: number; bytes: Uint8Array; grown: boolean } | null;
  l2: [index: number, bytes: Uint8Array][];
  l1: Uint8Array | null;
  /** Pending frees recorded before the snapshot: this flush makes their dropped references durable. */
  pendingTail: number;
}

/**
 * One flush of metadata; `final` also writes lazily held refcounts and
 * clears the dirty bit. Throws the SysError of a failed write or fsync,
 * after marking what it took dirty again (Ctl.FAILED stays set).
 */
export function writeback(meta: Meta, final: boolean): void {
  const freed = pass(meta, meta.d.lazyRefcounts && !final);
  if (!final) return;
  // The refcounts the frees lowered, and nothing held back any more.
  if (freed > 0) pass(meta, false);
  if (Atomics.load(meta.d.ctl, Ctl.DIRTY_BIT_ON_DISK) === 1) {
    setDirtyBit(meta, false);
    sync(meta);
  }
}

/** Steps 1-5 once; returns the clusters freed. */
function pass(meta: Meta, holdRefcounts: boolean): number {
  const d = meta.d;
  let snap: Snapshot | null = null;
  try {
    snap = meta.locked(() => take(meta, holdRefcounts));
    if (holdRefcounts && snap.l2.length + (snap.l1 ? 1 : 0) > 0 && Atomics.load(d.ctl, Ctl.DIRTY_BIT_ON_DISK) === 0) {
      // Refcounts on disk go stale from here: say so before any table does.
      setDirtyBit(meta, true);
      sync(meta);
    }
    const table = snap.reftable;
    for (const [b, bytes] of snap.refblocks) write(meta, bytes, d.reftable[b]);
    if (table?.grown) write(meta, table.bytes, table.offset);
    sync(meta); // 1: data, refcount blocks, a grown table
    if (table !== null) {
      if (table.grown) {
        const header = Buffer.alloc(12);
        header.writeBigUInt64BE(BigInt(table.offset), 0);
        header.writeUInt32BE((table.entries * 8) / meta.cs, 8);
        write(meta, header, HDR_REFCOUNT_TABLE_OFFSET);
      } else {
        write(meta, table.bytes, table.offset); // names blocks that step 1 made durable
      }
      sync(meta); // 2
      if (table.grown) meta.locked(() => meta.switchReftable(table.offset, table.entries));
    }
    if (snap.l2.length > 0) {
      for (const [t, bytes] of snap.l2) write(meta, bytes, meta.L.l1[t]);
      sync(meta); // 3
    }
    if (snap.l1 !== null) {
      write(meta, snap.l1, d.l1TableOffset);
      sync(meta); // 4
    }
  } catch (e) {
    if (snap !== null) redirty(meta, snap);
    Atomics.store(d.ctl, Ctl.FAILED, (e as { errno?: number }).errno ?? 5);
    throw e;
  } finally {
    if (snap?.reftable?.grown) d.num[Num.TAKEN_REFTABLE_OFFSET] = 0;
  }
  d.num[Num.FLUSHES]++;
  // 5: two epochs on, no request that saw a freed cluster is still in flight.
  meta.advanceEpoch();
  meta.advanceEpoch();
  const pendingTail = snap.pendingTail;
  return meta.locked(() => meta.applyFrees(pendingTail));
}

/** Locked. Copies what is dirty and marks it clean. */
function take(meta: Meta, holdRefcounts: boolean): Snapshot {
  const d = meta.d;
  const L = meta.L;
  const ctl = d.ctl;
  const cs = meta.cs;
  const snap: Snapshot = { refblocks: [], reftable: null, l2: [], l1: null, pendingTail: ctl[Ctl.PENDING_TAIL] };
  if (!holdRefcounts) {
    for (let b = 0; b < d.refblockDirty.length; b++) {
      if (d.refblockDirty[b] === 0 || d.reftable[b] === 0) continue;
      d.refblockDirty[b] = 0;
      const bytes = new Uint8Array(cs);
      encodeRefblock(d, b, cs, meta.blockEntries, bytes);
      snap.refblocks.push([b, bytes]);
    }
    if (ctl[Ctl.REFTABLE_DIRTY] === 1) {
      ctl[Ctl.REFTABLE_DIRTY] = 0;
      const grown = d.num[Num.NEW_REFTABLE_OFFSET] > 0;
      const entries = grown ? d.num[Num.NEW_REFTABLE_ENTRIES] : d.num[Num.REFTABLE_ENTRIES];
      const bytes = Buffer.alloc(entries * 8);
      for (let b = 0; b < entries; b++) bytes.writeBigUInt64BE(BigInt(d.reftable[b]), 8 * b);
      snap.reftable = { offset: grown ? d.num[Num.NEW_REFTABLE_OFFSET] : d.num[Num.REFTABLE_OFFSET], entries, bytes, grown };
      // The header will name this one: a queue that grows the table meanwhile must not free it (meta.ts growReftable).
      if (grown) d.num[Num.TAKEN_REFTABLE_OFFSET] = snap.reftable.offset;
    }
  }
  const E = L.l2Entries;
  for (let t = 0; t < d.l2Dirty.length; t++) {
    if (d.l2Dirty[t] === 0) continue;
    d.l2Dirty[t] = 0;
    const bytes = Buffer.alloc(cs);
    const words = L.l2;
    for (let i = 0, w = 2 * t * E; i < E; i++, w += 2) {
      bytes.writeUInt32BE(words[w], 8 * i);
      bytes.writeUInt32BE(words[w + 1], 8 * i + 4);
    }
    snap.l2.push([t, bytes]);
  }
  if (ctl[Ctl.L1_DIRTY] === 1) {
    ctl[Ctl.L1_DIRTY] = 0;
    const bytes = Buffer.alloc(L.l1.length * 8);
    for (let t = 0; t < L.l1.length; t++) {
      const off = L.l1[t];
      if (off === 0) continue;
      // Every L2 table of a writable image has refcount 1 (checked at open; new ones are ours).
      bytes.writeUInt32BE(entryHi(off, L2_COPIED), 8 * t);
      bytes.writeUInt32BE(entryLo(off, 0), 8 * t + 4);
    }
    snap.l1 = bytes;
  }
  const refcountsLeft = holdRefcounts && (ctl[Ctl.REFTABLE_DIRTY] === 1 || d.refblockDirty.includes(1));
  ctl[Ctl.DIRTY] = refcountsLeft ? 1 : 0;
  return snap;
}

/** After a failed write: what the snapshot took is dirty again. */
function redirty(meta: Meta, snap: Snapshot): void {
  const d = meta.d;
  meta.locked(() => {
    for (const [b] of snap.refblocks) d.refblockDirty[b] = 1;
    if (snap.reftable !== null) d.ctl[Ctl.REFTABLE_DIRTY] = 1;
    for (const [t] of snap.l2) d.l2Dirty[t] = 1;
    if (snap.l1 !== null) d.ctl[Ctl.L1_DIRTY] = 1;
    d.ctl[Ctl.DIRTY] = 1;
  });
}

function setDirtyBit(meta: Meta, dirty: boolean): void {
  const d = meta.d;
  const v = Buffer.alloc(8);
  v.writeBigUInt64BE(BigInt(d.incompatible) | (dirty ? INCOMPAT_DIRTY : 0n));
  write(meta, v, HDR_INCOMPATIBLE);
  Atomics.store(d.ctl, Ctl.DIRTY_BIT_ON_DISK, dirty ? 1 : 0);
}

function write(meta: Meta, bytes: Uint8Array, offset: number): void {
  const n = file.pwrite(meta.d.metaFd, bytes, bytes.length, offset);
  if (n !== bytes.length) throw Object.assign(new Error(`short metadata write (${n} of ${bytes.length} bytes at ${offset})`), { errno: 28 });
  meta.d.num[Num.META_BYTES] += n;
}

function sync(meta: Meta): void {
  file.fdatasync(meta.d.metaFd);
  meta.d.num[Num.FSYNCS]++;
}
