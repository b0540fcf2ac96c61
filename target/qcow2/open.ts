/**
 * Opening a qcow2 device (daemon main thread): the chain (layer.ts), and
 * for a writable image its refcounts, checked against every reference the
 * image holds, as `qemu-img check` counts them. An image whose clusters are
 * referenced more often than counted is refused (writing it would hand a
 * used cluster out again); a dirty one (lazy refcounts, or a process that
 * died) gets its refcounts rebuilt from the references first, as qemu does.
 */
import * as file from '../../sys/file.js';
import { TargetError } from '../target.js';
import {
  HDR_AUTOCLEAR,
  INCOMPAT_DIRTY,
  L2_COMPRESSED,
  L2_COPIED,
  type Qcow2Header,
  compressedClusters,
  compressedExtent,
  entryOffset,
} from './format.js';
import { type LayerData, type OpenedImage, buildMap, openImage } from './layer.js';
import { Ctl, Meta, type MetaData, Num, decodeRefblock, newMetaData } from './meta.js';
import { writeback } from './writeback.js';

export interface OpenedQcow2 extends OpenedImage {
  /** The writable image's shared metadata; null when read-only. */
  meta: MetaData | null;
  /** The image was dirty and its refcounts were rebuilt. */
  repaired: boolean;
}

export function openQcow2(path: string, readOnly: boolean): OpenedQcow2 {
  const image = openImage(path, readOnly);
  try {
    if (readOnly) return { ...image, meta: null, repaired: false };
    const { meta, repaired } = loadRefcounts(image.layers[0], image.header);
    return { ...image, meta, repaired };
  } catch (e) {
    image.close();
    throw e;
  }
}

function loadRefcounts(L: LayerData, h: Qcow2Header): { meta: MetaData; repaired: boolean } {
  const cs = h.clusterSize;
  const corrupt = (what: string) => new TargetError(`${L.path}: it is corrupt: ${what} (qemu-img check -r all may repair it)`);
  const refs = countReferences(L, h);
  const fileClusters = Math.ceil(L.fileSize / cs);
  const used = Math.max(fileClusters, refs.length);
  const hostCap = 2 * (used + L.map.length + L.l1.length) + 65536;
  const d = newMetaData(L, h, L.metaFd, hostCap);
  const meta = new Meta(d, L);
  const tableEntries = (h.refcountTableClusters * cs) / 8;
  const table = Buffer.alloc(tableEntries * 8);
  file.pread(L.metaFd, table, table.length, h.refcountTableOffset);
  const block = Buffer.alloc(cs);
  for (let b = 0; b < tableEntries; b++) {
    const off = Number(table.readBigUInt64BE(8 * b) & ~0x1ffn);
    if (off === 0) continue;
    if (off % cs !== 0 || off + cs > L.fileSize) throw corrupt(`refcount table entry ${b} points to ${off}`);
    if (b >= d.reftable.length) continue;
    d.reftable[b] = off;
    file.pread(L.metaFd, block, cs, off);
    if (!decodeRefblock(block, h.refcountOrder, d.refcounts, b * meta.blockEntries, meta.blockEntries)) {
      throw new TargetError(`${L.path}: a refcount in the block at ${off} is above 2^32 (ublk-ts keeps 32 bits)`);
    }
  }
  const num = d.num;
  num[Num.REFTABLE_OFFSET] = h.refcountTableOffset;
  num[Num.REFTABLE_ENTRIES] = tableEntries;
  num[Num.FILE_LENGTH] = L.fileSize;
  let hw = used;
  for (let i = d.refcounts.length - 1; i >= hw; i--) if (d.refcounts[i] !== 0) hw = i + 1; // leaks past the end of the file
  num[Num.HW] = hw;

  const dirty = (h.incompatible & INCOMPAT_DIRTY) !== 0n;
  if (dirty) {
    const over = refs.findIndex((r) => r > meta.maxRefcount);
    if (over >= 0) throw corrupt(`cluster ${over} has more references than a ${2 ** h.refcountOrder}-bit refcount holds`);
    d.refcounts.fill(0);
    d.refcounts.set(refs);
    d.refblockDirty.fill(1);
    d.ctl[Ctl.DIRTY_BIT_ON_DISK] = 1;
    d.ctl[Ctl.DIRTY] = 1;
    const r = meta.locked(() => meta.ensureRefblocks(hw));
    if (r < 0) throw new TargetError(`${L.path}: its refcounts cannot be rebuilt (no room for refcount blocks)`);
  } else {
    let over = 0;
    let first = -1;
    for (let i = 0; i < refs.length; i++) {
      if (refs[i] > d.refcounts[i]) {
        if (first < 0) first = i;
        over++;
      }
    }
    if (over > 0) throw corrupt(`${over} cluster(s) are referenced more often than their refcount says (first: offset ${first * cs})`);
  }
  for (let t = 0; t < L.l1.length; t++) {
    if (L.l1[t] > 0 && d.refcounts[L.l1[t] / cs] !== 1) {
      throw new TargetError(`${L.path}: its L2 table at ${L.l1[t]} is shared (refcount ${d.refcounts[L.l1[t] / cs]}); serve it with --read-only`);
    }
  }
  // COPIED says "refcount exactly one": make it true of every entry, so writes in place are safe.
  const copied = (host: number) => d.refcounts[host] === 1;
  for (let g = 0; g < L.map.length; g++) {
    const hi = L.l2[2 * g];
    const lo = L.l2[2 * g + 1];
    if (hi & L2_COMPRESSED) continue;
    const off = entryOffset(hi, lo);
    if (off === 0) continue;
    const want = copied(off / cs) ? (hi | L2_COPIED) >>> 0 : (hi & ~L2_COPIED) >>> 0;
    if (want !== hi) {
      L.l2[2 * g] = want;
      d.l2Dirty[Math.floor(g / L.l2Entries)] = 1;
      d.ctl[Ctl.DIRTY] = 1;
    }
  }
  buildMap(L, copied);
  if (h.autoclear !== 0n) {
    // The spec: an implementation may write an image with auto-clear bits it does not keep up only after clearing them.
    const zero = Buffer.alloc(8);
    file.pwrite(L.metaFd, zero, 8, HDR_AUTOCLEAR);
    file.fdatasync(L.metaFd);
  }
  if (d.ctl[Ctl.DIRTY] === 1 || dirty) writeback(meta, true);
  return { meta: d, repaired: dirty };
}

/** How many references each host cluster has: header, tables, refcount blocks, data. */
function countReferences(L: LayerData, h: Qcow2Header): Uint32Array {
  const cs = h.clusterSize;
  const bits = h.clusterBits;
  const ranges: [number, number][] = [];
  const add = (off: number, len: number) => ranges.push([Math.floor(off / cs), Math.floor((off + len - 1) / cs)]);
  add(0, cs); // the header and its extensions
  if (h.l1Size > 0) add(h.l1TableOffset, h.l1Size * 8);
  add(h.refcountTableOffset, h.refcountTableClusters * cs);
  const table = Buffer.alloc(h.refcountTableClusters * cs);
  file.pread(L.metaFd, table, table.length, h.refcountTableOffset);
  for (let b = 0; b < table.length / 8; b++) {
    const off = Number(table.readBigUInt64BE(8 * b) & ~0x1ffn);
    if (off !== 0) add(off, cs);
  }
  let max = 0;
  for (const [, last] of ranges) max = Math.max(max, last);
  for (let t = 0; t < L.l1.length; t++) if (L.l1[t] > 0) max = Math.max(max, L.l1[t] / cs);
  for (let g = 0; g < L.map.length; g++) {
    const hi = L.l2[2 * g];
    const lo = L.l2[2 * g + 1];
    if (hi === 0 && lo === 0) continue;
    if (hi & L2_COMPRESSED) max = Math.max(max, compressedClusters(compressedExtent(hi, lo, bits), bits)[1]);
    else max = Math.max(max, entryOffset(hi, lo) / cs);
  }
  const refs = new Uint32Array(max + 1);
  for (const [first, last] of ranges) for (let c = first; c <= last; c++) refs[c]++;
  for (let t = 0; t < L.l1.length; t++) if (L.l1[t] > 0) refs[L.l1[t] / cs]++;
  for (let g = 0; g < L.map.length; g++) {
    const hi = L.l2[2 * g];
    const lo = L.l2[2 * g + 1];
    if (hi === 0 && lo === 0) continue;
    if (hi & L2_COMPRESSED) {
      const [first, last] = compressedClusters(compressedExtent(hi, lo, bits), bits);
      for (let c = first; c <= last; c++) refs[c]++;
    } else {
      const off = entryOffset(hi, lo);
      if (off > 0) refs[off / cs]++;
    }
  }
  return refs;
}
