/**
 * The images of a qcow2 device: the image itself (layer 0) and its backing
 * chain, each read whole into memory when the device opens (L1 and every
 * L2 table), so that a request finds its clusters without metadata IO.
 * Opening runs in the daemon's main thread; the LayerData it makes goes to
 * every queue (structured-cloned: the tables are SharedArrayBuffers, so
 * the queues and the metadata writer see one copy).
 */
import { realpathSync } from 'node:fs';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import * as file from '../../sys/file.js';
import { PAGE_SIZE } from '../../sys/memory.js';
import { openBacking, fail } from '../backing.js';
import { PROBE_BYTES, probe } from '../image-format.js';
import { TargetError } from '../target.js';
import { decompressCluster } from './compress.js';
import {
  L2_COMPRESSED,
  L2_COPIED,
  L2_STD_RESERVED_HI,
  L2_STD_RESERVED_LO,
  L2_ZERO,
  QCOW_MAGIC,
  Qcow2FormatError,
  type Qcow2Header,
  compressedExtent,
  entryOffset,
  parseHeader,
  unsupported,
} from './format.js';

/** map[] values besides a host cluster index (> 0): */
export const MAP_UNALLOCATED = 0;
export const MAP_ZERO = -1;
/** Anything the raw L2 entry must say: compressed, shared (refcount > 1), a host index ≥ 2^31. */
export const MAP_SLOW = -2;

/** Guest clusters an image may have (its tables are held in memory: 13 bytes each, where allocated). */
export const MAX_GUEST_CLUSTERS = 2 ** 28;
/** The device's logical block size: every request is a multiple of it. */
export const SECTOR = 512;
/** Backing files followed at most. */
const MAX_CHAIN = 32;

/** One image of the chain, as every thread sees it. */
export interface LayerData {
  /** As given, or as the image above names it (resolved). */
  path: string;
  realPath: string;
  format: 'qcow2' | 'raw';
  /** Data IO (O_DIRECT when `direct`). */
  fd: number;
  /** Buffered: metadata, compressed clusters, the synchronous reader. */
  metaFd: number;
  /** The descriptor that holds the flock (the data one when O_DIRECT works). */
  lockFd: number;
  direct: boolean;
  /** Bytes the guest sees of this layer (beyond them, zeros). */
  size: number;
  fileSize: number;
  /** qcow2 only (0 for raw). */
  clusterBits: number;
  version: number;
  compressionType: number;
  /**
   * Per guest cluster: a host cluster index (> 0) to read (and, in a
   * writable image, write) in place, or a MAP_* code. Written only under
   * the metadata lock; an Int32 is never torn.
   */
  map: Int32Array;
  /** Per guest cluster, the raw L2 entry as [hi, lo] words (u64 bits 32-63, 0-31). */
  l2: Uint32Array;
  /** L2 table host offsets by L1 index (0: none). */
  l1: Float64Array;
  l2Entries: number;
}

/** What a layer is read as: one data extent, zeros, or a compressed cluster. */
export const EXT_DATA = 0;
export const EXT_ZERO = 1;
export const EXT_COMPRESSED = 2;

/** The answer of resolve(), reused (no allocation per request). */
export interface Extent {
  kind: number;
  /** The layer that holds it (EXT_DATA, EXT_COMPRESSED). */
  layer: number;
  /** EXT_DATA: host byte offset in that layer's file; EXT_COMPRESSED: the guest cluster. */
  host: number;
  /** Bytes from the asked offset that this extent covers. */
  length: number;
  /** EXT_COMPRESSED: the L2 entry, as read (under the guard for layer 0). */
  hi: number;
  lo: number;
}

export function newExtent(): Extent {
  return { kind: EXT_ZERO, layer: 0, host: 0, length: 0, hi: 0, lo: 0 };
}

/** Who may change layer 0 while others read it (the metadata lock), or null for a read-only chain. */
export interface Guard {
  lock(): void;
  unlock(): void;
}

/**
 * Where guest bytes [pos, pos + maxLen) begin, looking down the chain from
 * layer `from`: `out` gets the first extent (contiguous host clusters of
 * one layer merged). Layer 0 may be written by other threads: its raw
 * entries are read under `guard`.
 */
export function resolve(layers: LayerData[], from: number, pos: number, maxLen: number, out: Extent, guard: Guard | null): void {
  let len = maxLen;
  for (let k = from; k < layers.length; k++) {
    const L = layers[k];
    if (pos >= L.size) break;
    if (len > L.size - pos) len = L.size - pos;
    if (L.format === 'raw') {
      out.kind = EXT_DATA;
      out.layer = k;
      out.host = pos;
      out.length = len;
      return;
    }
    const cs = 2 ** L.clusterBits;
    const g = Math.floor(pos / cs);
    const inCluster = pos - g * cs;
    const map = L.map;
    const e = map[g];
    let run = cs - inCluster;
    if (e > 0) {
      for (let i = 1; run < len && map[g + i] === e + i; i++) run += cs;
      out.kind = EXT_DATA;
      out.layer = k;
      out.host = e * cs + inCluster;
      out.length = run < len ? run : len;
      return;
    }
    if (e === MAP_UNALLOCATED || e === MAP_ZERO) {
      for (let i = 1; run < len && map[g + i] === e; i++) run += cs;
      if (run < len) len = run;
      if (e === MAP_ZERO) break;
      continue; // the layer below has these bytes
    }
    // MAP_SLOW: the raw entry says; read under the guard, it may have changed since the map was read.
    const guarded = k === 0 && guard !== null;
    if (guarded) guard.lock();
    const hi = L.l2[2 * g];
    const lo = L.l2[2 * g + 1];
    if (guarded) guard.unlock();
    if (len > run) len = run;
    out.layer = k;
    out.length = len;
    if (hi & L2_COMPRESSED) {
      out.kind = EXT_COMPRESSED;
      out.host = g;
      out.hi = hi;
      out.lo = lo;
      return;
    }
    if (lo & L2_ZERO && L.version >= 3) {
      out.kind = EXT_ZERO;
      return;
    }
    const off = entryOffset(hi, lo);
    if (off === 0) continue; // deallocated meanwhile: the layer below has these bytes
    out.kind = EXT_DATA;
    out.host = off + inCluster;
    return;
  }
  out.kind = EXT_ZERO;
  out.length = len;
}

/** Reads the compressed cluster `g` of `layer` and decompresses it into `out` (one cluster). */
export function readCompressed(L: LayerData, hi: number, lo: number, out: Uint8Array): void {
  const c = compressedExtent(hi, lo, L.clusterBits);
  const src = Buffer.allocUnsafe(c.length);
  const n = file.pread(L.metaFd, src, c.length, c.offset);
  try {
    decompressCluster(L.compressionType, src.subarray(0, n), out);
  } catch (e) {
    throw new Error(`${L.path}: compressed cluster at ${c.offset}: ${(e as Error).message}`);
  }
}

/**
 * Reads guest bytes synchronously (buffered, from metaFd): the reference
 * reader. Used for copy-on-write of partial clusters and by the tests.
 */
export function readGuest(layers: LayerData[], from: number, offset: number, dest: Uint8Array, guard: Guard | null = null): void {
  const x = newExtent();
  let done = 0;
  while (done < dest.length) {
    const pos = offset + done;
    resolve(layers, from, pos, dest.length - done, x, guard);
    const part = dest.subarray(done, done + x.length);
    if (x.kind === EXT_ZERO) {
      part.fill(0);
    } else if (x.kind === EXT_DATA) {
      const n = file.pread(layers[x.layer].metaFd, part, x.length, x.host);
      part.fill(0, n); // past the end of the file: zeros
    } else {
      const L = layers[x.layer];
      const cs = 2 ** L.clusterBits;
      const cluster = new Uint8Array(cs);
      readCompressed(L, x.hi, x.lo, cluster);
      const inCluster = pos - x.host * cs;
      part.set(cluster.subarray(inCluster, inCluster + x.length));
    }
    done += x.length;
  }
}

export interface OpenedImage {
  layers: LayerData[];
  header: Qcow2Header;
  /** Said on stderr by `ublk add`. */
  warnings: string[];
  close(): void;
}

/**
 * Opens `path` and its backing chain. Layer 0 is opened for writing unless
 * `readOnly`, with an exclusive lock; backing files read-only, shared.
 * The tables are read, not yet checked against refcounts (meta.ts does
 * that for a writable image).
 */
export function openImage(path: string, readOnly: boolean): OpenedImage {
  const layers: LayerData[] = [];
  const warnings: string[] = [];
  const close = () => {
    for (const L of layers) for (const fd of new Set([L.fd, L.metaFd, L.lockFd])) if (fd >= 0) file.close(fd);
  };
  try {
    let header: Qcow2Header | null = null;
    let next: { path: string; format: string | null } | null = { path, format: 'qcow2' };
    const seen = new Set<string>();
    while (next !== null) {
      if (layers.length > MAX_CHAIN) throw new TargetError(`${path}: its backing chain is longer than ${MAX_CHAIN} images`);
      const top = layers.length === 0;
      const real = realPathOrNull(next.path);
      if (real !== null && seen.has(real)) throw new TargetError(`${path}: its backing chain loops back to ${real}`);
      const b = openBacking(next.path, { readOnly: top ? readOnly : true, contents: 'image', lock: top ? 'exclusive' : 'shared' });
      const L: LayerData = {
        path: next.path,
        realPath: b.realPath,
        format: 'raw',
        fd: b.fd,
        metaFd: -1,
        lockFd: b.fd,
        direct: b.direct,
        size: b.size,
        fileSize: b.size,
        clusterBits: 0,
        version: 0,
        compressionType: 0,
        map: new Int32Array(0),
        l2: new Uint32Array(0),
        l1: new Float64Array(0),
        l2Entries: 0,
      };
      layers.push(L);
      warnings.push(...b.warnings);
      seen.add(b.realPath);
      try {
        L.metaFd = file.open(next.path, top && !readOnly ? file.O_RDWR : file.O_RDONLY);
      } catch (e) {
        fail(next.path, e);
      }
      if (L.direct && b.logicalBlockSize > SECTOR) {
        // A 4K-sector disk: 512-byte requests cannot go O_DIRECT; the buffered descriptor serves them.
        L.fd = L.metaFd;
        L.direct = false;
        warnings.push(`${L.path}: its disk takes O_DIRECT only in 4 KiB units; serving it with buffered IO`);
      }
      const format = next.format ?? probeFormat(L);
      if (format === 'raw') {
        next = null;
        continue;
      }
      if (format !== 'qcow2') throw new TargetError(`${L.path}: backing format '${format}' is not supported (qcow2 and raw are)`);
      const h = loadQcow2(L, top && !readOnly);
      if (top && !readOnly && L.direct && h.clusterSize < PAGE_SIZE) {
        // Metadata goes through the page cache; with clusters smaller than a page an O_DIRECT data
        // write can hit a page that holds dirty metadata, which the kernel cannot invalidate (and
        // reports as EIO at the next fdatasync). Data takes the buffered descriptor too.
        L.fd = L.metaFd;
        L.direct = false;
      }
      if (top) header = h;
      next = h.backingFile === null ? null : { path: backingPath(L.path, h.backingFile), format: h.backingFormat };
    }
    if (header === null) throw new TargetError(`${path} is not a qcow2 image`);
    return { layers, header, warnings, close };
  } catch (e) {
    close();
    throw e;
  }
}

function realPathOrNull(path: string): string | null {
  try {
    return realpathSync(path);
  } catch {
    return null; // openBacking says why
  }
}

/** The backing file name resolved as qemu does: relative to the directory of the image that names it. */
function backingPath(imagePath: string, name: string): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(name) && !name.startsWith('file:')) {
    throw new TargetError(`${imagePath}: its backing file '${name}' is not a local file (only local backing files are supported)`);
  }
  const local = name.startsWith('file:') ? name.slice(5) : name;
  return isAbsolute(local) ? local : resolvePath(dirname(imagePath), local);
}

/** A backing file without a backing format: qcow2 by its magic, raw when it starts like no image format. */
function probeFormat(L: LayerData): string {
  const head = Buffer.alloc(PROBE_BYTES);
  const n = file.pread(L.metaFd, head, PROBE_BYTES, 0);
  if (n >= 4 && head.readUInt32BE(0) === QCOW_MAGIC) return 'qcow2';
  const other = probe(head.subarray(0, n));
  if (other !== null) throw new TargetError(`${L.path}: the backing file is a ${other.name} image, which ublk-ts does not read`);
  return 'raw';
}

/** Reads a qcow2 layer's header, L1 and every L2 table into L. */
function loadQcow2(L: LayerData, writable: boolean): Qcow2Header {
  const where = (e: unknown): never => {
    if (e instanceof TargetError && !(e instanceof Qcow2FormatError)) throw e;
    if (e instanceof Qcow2FormatError) throw new TargetError(`${L.path}: ${e.message}`);
    fail(L.path, e);
  };
  let h: Qcow2Header;
  try {
    const first = Buffer.alloc(512);
    const n = file.pread(L.metaFd, first, 512, 0);
    if (n < 72 || first.readUInt32BE(0) !== QCOW_MAGIC) throw new TargetError(`${L.path} is not a qcow2 image`);
    const bits = first.readUInt32BE(20);
    const head = Buffer.alloc(Math.min(2 ** Math.min(Math.max(bits, 9), 21), L.fileSize));
    file.pread(L.metaFd, head, head.length, 0);
    h = parseHeader(head, L.fileSize);
  } catch (e) {
    return where(e);
  }
  const why = unsupported(h, writable);
  if (why !== null) throw new TargetError(`${L.path}: ${why}`);
  if (h.size % SECTOR !== 0) throw new TargetError(`${L.path}: its virtual size ${h.size} is not a multiple of ${SECTOR} bytes`);
  L.format = 'qcow2';
  L.size = h.size;
  L.clusterBits = h.clusterBits;
  L.version = h.version;
  L.compressionType = h.compressionType;
  const cs = h.clusterSize;
  const l2Entries = cs / 8;
  L.l2Entries = l2Entries;
  const guestClusters = h.l1Size * l2Entries;
  if (Math.ceil(h.size / cs) > guestClusters) throw new TargetError(`${L.path}: its L1 table (${h.l1Size} entries) does not cover its virtual size`);
  if (guestClusters > MAX_GUEST_CLUSTERS) {
    throw new TargetError(`${L.path}: its tables cover ${guestClusters} clusters; ublk-ts holds at most ${MAX_GUEST_CLUSTERS} (use larger clusters)`);
  }
  L.map = new Int32Array(new SharedArrayBuffer(guestClusters * 4));
  L.l2 = new Uint32Array(new SharedArrayBuffer(guestClusters * 8));
  L.l1 = new Float64Array(new SharedArrayBuffer(h.l1Size * 8));
  const corrupt = (what: string) => new TargetError(`${L.path}: it is corrupt: ${what} (qemu-img check tells more)`);
  try {
    const l1 = Buffer.alloc(h.l1Size * 8);
    file.pread(L.metaFd, l1, l1.length, h.l1TableOffset);
    const table = Buffer.alloc(cs);
    for (let t = 0; t < h.l1Size; t++) {
      const hi = l1.readUInt32BE(8 * t);
      const lo = l1.readUInt32BE(8 * t + 4);
      const off = entryOffset(hi, lo);
      if ((hi & 0x7f000000) !== 0 || (lo & 0x1ff) !== 0) throw corrupt(`L1 entry ${t} has reserved bits set`);
      if (off === 0) continue;
      if (off % cs !== 0) throw corrupt(`L1 entry ${t} points to ${off}, not a cluster boundary`);
      if (off + cs > L.fileSize) throw corrupt(`L1 entry ${t} points past the end of the file`);
      L.l1[t] = off;
      if (file.pread(L.metaFd, table, cs, off) !== cs) throw corrupt(`the L2 table at ${off} is short`);
      const base = t * l2Entries;
      for (let i = 0; i < l2Entries; i++) {
        const ehi = table.readUInt32BE(8 * i);
        const elo = table.readUInt32BE(8 * i + 4);
        if (ehi === 0 && elo === 0) continue;
        const g = base + i;
        L.l2[2 * g] = ehi;
        L.l2[2 * g + 1] = elo;
        if (ehi & L2_COMPRESSED) {
          if (ehi & L2_COPIED) throw corrupt(`guest cluster ${g} is compressed and marked COPIED`);
          continue;
        }
        if (ehi & L2_STD_RESERVED_HI || elo & L2_STD_RESERVED_LO || (elo & L2_ZERO && h.version < 3)) {
          throw corrupt(`the L2 entry of guest cluster ${g} has reserved bits set`);
        }
        if (entryOffset(ehi, elo) % cs !== 0) throw corrupt(`guest cluster ${g} maps to an offset that is not a cluster boundary`);
      }
    }
  } catch (e) {
    if (e instanceof TargetError) throw e;
    where(e);
  }
  buildMap(L, null);
  return h;
}

/**
 * Fills L.map from the raw entries. `copied(hostCluster)` says whether a
 * standard cluster may be written in place (refcount exactly one); null
 * for a layer that is only read, where any standard cluster is read in place.
 */
export function buildMap(L: LayerData, copied: ((hostCluster: number) => boolean) | null): void {
  const cs = 2 ** L.clusterBits;
  const n = L.map.length;
  for (let g = 0; g < n; g++) L.map[g] = mapValue(L, g, cs, copied);
}

/** The map value of guest cluster g from its raw entry. */
export function mapValue(L: LayerData, g: number, cs: number, copied: ((hostCluster: number) => boolean) | null): number {
  const hi = L.l2[2 * g];
  const lo = L.l2[2 * g + 1];
  if (hi === 0 && lo === 0) return MAP_UNALLOCATED;
  if (hi & L2_COMPRESSED) return MAP_SLOW;
  if (lo & L2_ZERO && L.version >= 3) return MAP_ZERO;
  const off = entryOffset(hi, lo);
  if (off === 0) return MAP_UNALLOCATED;
  const host = off / cs;
  if (host >= 2 ** 31) return MAP_SLOW;
  if (copied !== null && !copied(host)) return MAP_SLOW;
  return host;
}
