/**
 * The qcow2 on-disk format, as qemu's docs/interop/qcow2.txt defines it:
 * the header and its extensions, L1/L2 and refcount entries. Pure: bytes
 * in, values out; everything is big-endian on disk.
 */
import { TargetError } from '../target.js';

export const QCOW_MAGIC = 0x514649fb; // "QFI\xfb"

/** incompatible_features bits. */
export const INCOMPAT_DIRTY = 1n;
export const INCOMPAT_CORRUPT = 2n;
export const INCOMPAT_DATA_FILE = 4n;
export const INCOMPAT_COMPRESSION = 8n;
export const INCOMPAT_EXTL2 = 16n;
const INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
/** compatible_features bit 0. */
export const COMPAT_LAZY_REFCOUNTS = 1n;
/** autoclear_features bit 0: the bitmaps extension is consistent. */
export const AUTOCLEAR_BITMAPS = 1n;

/** Byte offsets of the header fields ublk-ts writes. */
export const HDR_REFCOUNT_TABLE_OFFSET = 48; // u64, then refcount_table_clusters u32 at 56
export const HDR_INCOMPATIBLE = 72; // u64
export const HDR_AUTOCLEAR = 88; // u64

/** Header extension types. */
const EXT_END = 0;
const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_FEATURE_NAMES = 0x6803f857;
const EXT_BITMAPS = 0x23852875;
const EXT_CRYPTO = 0x0537be77;
const EXT_DATA_FILE = 0x44415441;

export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;

/** qemu's limits, which images made by qemu keep to. */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
const MAX_BACKING_NAME = 1023;

export interface Qcow2Header {
  version: number;
  clusterBits: number;
  clusterSize: number;
  /** Virtual disk size in bytes. */
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  /** As stored in the image (not resolved), or null. */
  backingFile: string | null;
  backingFormat: string | null;
  dataFile: string | null;
  hasBitmaps: boolean;
  /** incompatible bit number → name, from the feature name table. */
  incompatibleNames: Map<number, string>;
}

/** An image whose bytes break the format: one line, the caller prefixes the path. */
export class Qcow2FormatError extends TargetError {}

function u64(v: DataView, at: number): number {
  const n = v.getBigUint64(at);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new Qcow2FormatError(`header field at byte ${at} is too large (${n})`);
  return Number(n);
}

/**
 * Parses the header and its extensions from the image's first cluster
 * (or more: `head` must hold at least the first cluster or the whole file).
 */
export function parseHeader(head: Uint8Array, fileSize: number): Qcow2Header {
  if (head.length < 72) throw new Qcow2FormatError('too short for a qcow2 header');
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  if (v.getUint32(0) !== QCOW_MAGIC) throw new Qcow2FormatError('not a qcow2 image (no QFI\\xfb magic)');
  const version = v.getUint32(4);
  if (version !== 2 && version !== 3) throw new Qcow2FormatError(`qcow2 version ${version} is not supported (2 and 3 are)`);
  const clusterBits = v.getUint32(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new Qcow2FormatError(`cluster_bits ${clusterBits} is outside 9..21 (512 B to 2 MiB clusters)`);
  }
  const clusterSize = 2 ** clusterBits;
  const h: Qcow2Header = {
    version,
    clusterBits,
    clusterSize,
    size: u64(v, 24),
    cryptMethod: v.getUint32(32),
    l1Size: v.getUint32(36),
    l1TableOffset: u64(v, 40),
    refcountTableOffset: u64(v, 48),
    refcountTableClusters: v.getUint32(56),
    nbSnapshots: v.getUint32(60),
    incompatible: 0n,
    compatible: 0n,
    autoclear: 0n,
    refcountOrder: 4,
    headerLength: 72,
    compressionType: COMPRESSION_ZLIB,
    backingFile: null,
    backingFormat: null,
    dataFile: null,
    hasBitmaps: false,
    incompatibleNames: new Map(),
  };
  if (version === 3) {
    if (head.length < 104) throw new Qcow2FormatError('too short for a version 3 header');
    h.incompatible = v.getBigUint64(72);
    h.compatible = v.getBigUint64(80);
    h.autoclear = v.getBigUint64(88);
    h.refcountOrder = v.getUint32(96);
    h.headerLength = v.getUint32(100);
    if (h.headerLength < 104 || h.headerLength % 8 !== 0) throw new Qcow2FormatError(`header_length ${h.headerLength} is invalid`);
    if (h.headerLength > 104) h.compressionType = head[104];
    // The spec: the compression type bit is set exactly when the type is not zlib.
    if (((h.incompatible & INCOMPAT_COMPRESSION) !== 0n) !== (h.compressionType !== COMPRESSION_ZLIB)) {
      throw new Qcow2FormatError(`compression_type ${h.compressionType} and the compression type feature bit disagree`);
    }
    if (h.refcountOrder > 6) throw new Qcow2FormatError(`refcount_order ${h.refcountOrder} is above 6`);
  }
  if (h.headerLength > clusterSize) throw new Qcow2FormatError('the header is longer than a cluster');
  for (const [name, off] of [['l1_table_offset', h.l1TableOffset], ['refcount_table_offset', h.refcountTableOffset]] as const) {
    if (off % clusterSize !== 0) throw new Qcow2FormatError(`${name} ${off} is not cluster-aligned`);
  }
  if (h.l1TableOffset + h.l1Size * 8 > fileSize) throw new Qcow2FormatError('the L1 table lies beyond the end of the file');
  if (h.refcountTableOffset + h.refcountTableClusters * clusterSize > fileSize) {
    throw new Qcow2FormatError('the refcount table lies beyond the end of the file');
  }
  parseExtensions(head, v, h);
  const backingOffset = u64(v, 8);
  if (backingOffset !== 0) {
    const len = v.getUint32(16);
    if (len > MAX_BACKING_NAME || backingOffset + len > Math.min(clusterSize, head.length)) {
      throw new Qcow2FormatError('the backing file name is longer than 1023 bytes or outside the first cluster');
    }
    h.backingFile = new TextDecoder().decode(head.subarray(backingOffset, backingOffset + len));
  }
  return h;
}

function parseExtensions(head: Uint8Array, v: DataView, h: Qcow2Header): void {
  let at = h.headerLength;
  const end = Math.min(h.clusterSize, head.length);
  const text = (from: number, len: number) => new TextDecoder().decode(head.subarray(from, from + len));
  while (at + 8 <= end) {
    const type = v.getUint32(at);
    const len = v.getUint32(at + 4);
    const data = at + 8;
    if (type === EXT_END) return;
    if (data + len > end) throw new Qcow2FormatError(`header extension 0x${type.toString(16)} runs past the first cluster`);
    switch (type) {
      case EXT_BACKING_FORMAT:
        h.backingFormat = text(data, len);
        break;
      case EXT_DATA_FILE:
        h.dataFile = text(data, len);
        break;
      case EXT_BITMAPS:
        h.hasBitmaps = true;
        break;
      case EXT_FEATURE_NAMES:
        for (let e = data; e + 48 <= data + len; e += 48) {
          if (head[e] !== 0) continue; // only incompatible features are needed to refuse
          const name = text(e + 2, 46).replace(/\0.*$/s, '');
          h.incompatibleNames.set(head[e + 1], name);
        }
        break;
      case EXT_CRYPTO:
      default:
        break; // unknown extensions may be ignored (the spec)
    }
    at = data + Math.ceil(len / 8) * 8;
  }
}

/** Why this image cannot be served (`writable`: also written to), or null. */
export function unsupported(h: Qcow2Header, writable: boolean): string | null {
  const unknown = h.incompatible & ~INCOMPAT_KNOWN;
  if (unknown !== 0n) {
    const bits: string[] = [];
    for (let b = 0; b < 64; b++) {
      if ((unknown >> BigInt(b)) & 1n) bits.push(h.incompatibleNames.get(b) ?? `bit ${b}`);
    }
    return `it uses incompatible features ublk-ts does not know (${bits.join(', ')})`;
  }
  if (h.cryptMethod !== 0) return `it is encrypted (${h.cryptMethod === 1 ? 'AES' : h.cryptMethod === 2 ? 'LUKS' : `method ${h.cryptMethod}`}); decrypt it with qemu-img convert`;
  if (h.incompatible & INCOMPAT_DATA_FILE || h.dataFile !== null) return 'its data lives in an external data file';
  if (h.incompatible & INCOMPAT_EXTL2) return 'it has extended L2 entries (subclusters); convert it with qemu-img convert -O qcow2';
  if (h.compressionType !== COMPRESSION_ZLIB && h.compressionType !== COMPRESSION_ZSTD) {
    return `its compression type ${h.compressionType} is unknown`;
  }
  if (!writable) return null;
  if (h.incompatible & INCOMPAT_CORRUPT) return 'qemu marked it corrupt; repair it with qemu-img check -r all, or serve it with --read-only';
  if (h.nbSnapshots > 0) return `it has ${h.nbSnapshots} internal snapshot(s), which ublk-ts does not write around; serve it with --read-only`;
  if (h.hasBitmaps) return 'it has persistent dirty bitmaps, which ublk-ts does not update; serve it with --read-only or remove them (qemu-img bitmap --remove)';
  return null;
}

/* L2 entries, held as two u32 words: hi (bits 32-63) and lo (bits 0-31). */

/** Bit 63: a standard cluster whose refcount is exactly one (writable in place). */
export const L2_COPIED = 0x80000000;
/** Bit 62: a compressed cluster. */
export const L2_COMPRESSED = 0x40000000;
/** Bit 0 of a standard cluster (version 3): reads as zeros. */
export const L2_ZERO = 1;
/** hi bits 56-61 and lo bits 1-8: reserved in a standard cluster descriptor. */
export const L2_STD_RESERVED_HI = 0x3f000000;
export const L2_STD_RESERVED_LO = 0x1fe;

/** Bits 9-55: the host offset of a standard entry (L1, L2 and refcount table entries alike). */
export function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ffffff) * 2 ** 32 + ((lo & 0xfffffe00) >>> 0);
}

/** hi and lo of a standard entry at `offset` with the flags given. */
export function entryHi(offset: number, flagsHi: number): number {
  return ((Math.floor(offset / 2 ** 32) & 0x00ffffff) | flagsHi) >>> 0;
}

export function entryLo(offset: number, flagsLo: number): number {
  return ((offset % 2 ** 32) | flagsLo) >>> 0;
}

export interface CompressedExtent {
  /** Host byte offset of the compressed data (not aligned). */
  offset: number;
  /** Bytes to read: up to the end of the last 512-byte sector the entry names. */
  length: number;
}

/** Decodes a compressed cluster descriptor (x = 62 - (cluster_bits - 8)). */
export function compressedExtent(hi: number, lo: number, clusterBits: number): CompressedExtent {
  const v = (BigInt(hi & 0x3fffffff) << 32n) | BigInt(lo >>> 0);
  const x = BigInt(62 - (clusterBits - 8));
  const offset = Number(v & ((1n << x) - 1n));
  const sectors = Number(v >> x) + 1;
  return { offset, length: sectors * 512 - (offset % 512) };
}

/** The host clusters a compressed cluster's data touches (each holds a reference for it). */
export function compressedClusters(c: CompressedExtent, clusterBits: number): [first: number, last: number] {
  const start = c.offset - (c.offset % 512);
  const sectorsEnd = start + Math.ceil((c.offset - start + c.length) / 512) * 512;
  return [Math.floor(start / 2 ** clusterBits), Math.floor((sectorsEnd - 1) / 2 ** clusterBits)];
}

/* Refcount blocks: entries of 2^order bits, big-endian; below a byte, bit 0 is the least significant. */

export function getRefcount(block: Uint8Array, i: number, order: number): number {
  switch (order) {
    case 4:
      return (block[2 * i] << 8) | block[2 * i + 1];
    case 3:
      return block[i];
    case 5:
      return ((block[4 * i] << 24) | (block[4 * i + 1] << 16) | (block[4 * i + 2] << 8) | block[4 * i + 3]) >>> 0;
    case 6: {
      const hi = ((block[8 * i] << 24) | (block[8 * i + 1] << 16) | (block[8 * i + 2] << 8) | block[8 * i + 3]) >>> 0;
      const lo = ((block[8 * i + 4] << 24) | (block[8 * i + 5] << 16) | (block[8 * i + 6] << 8) | block[8 * i + 7]) >>> 0;
      return hi * 2 ** 32 + lo;
    }
    default: {
      const bits = 1 << order;
      const bit = i * bits;
      return (block[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
    }
  }
}

export function setRefcount(block: Uint8Array, i: number, order: number, value: number): void {
  switch (order) {
    case 4:
      block[2 * i] = value >> 8;
      block[2 * i + 1] = value;
      return;
    case 3:
      block[i] = value;
      return;
    case 5:
      block[4 * i] = value >>> 24;
      block[4 * i + 1] = value >>> 16;
      block[4 * i + 2] = value >>> 8;
      block[4 * i + 3] = value;
      return;
    case 6:
      block.fill(0, 8 * i, 8 * i + 4);
      setRefcount(block, 2 * i + 1, 5, value);
      return;
    default: {
      const bits = 1 << order;
      const bit = i * bits;
      const mask = ((1 << bits) - 1) << (bit & 7);
      block[bit >> 3] = (block[bit >> 3] & ~mask) | ((value << (bit & 7)) & mask);
    }
  }
}

/** The largest refcount an entry of 2^order bits holds (capped where a double stays exact). */
export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (1 << order) - 1;
}
