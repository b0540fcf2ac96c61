// Pins the qcow2 layouts against qemu's docs/interop/qcow2.txt: header field
// offsets, L1/L2 entry bits, compressed cluster descriptors and refcount
// entry widths. A wrong bit here would read another cluster's data, or
// write an image qemu calls corrupt.
import t from 'tap';
import {
  COMPRESSION_ZSTD,
  HDR_AUTOCLEAR,
  HDR_INCOMPATIBLE,
  HDR_REFCOUNT_TABLE_OFFSET,
  L2_COMPRESSED,
  L2_COPIED,
  L2_ZERO,
  QCOW_MAGIC,
  compressedClusters,
  compressedExtent,
  entryHi,
  entryLo,
  entryOffset,
  getRefcount,
  parseHeader,
  setRefcount,
  unsupported,
} from '../../target/qcow2/format.js';
import { zstdFrameLength } from '../../target/qcow2/compress.js';

/** A version 3 header as qemu-img writes it, fields at the spec's offsets. */
function header(fields: Partial<Record<'version' | 'clusterBits' | 'size' | 'l1Size' | 'l1Offset' | 'refOffset' | 'refClusters' | 'incompatible' | 'compatible' | 'refcountOrder' | 'compression', number | bigint>>, extensions: Buffer[] = []): Buffer {
  const b = Buffer.alloc(65536);
  b.writeUInt32BE(QCOW_MAGIC, 0);
  b.writeUInt32BE(Number(fields.version ?? 3), 4);
  b.writeUInt32BE(Number(fields.clusterBits ?? 16), 20);
  b.writeBigUInt64BE(BigInt(fields.size ?? 1 << 30), 24);
  b.writeUInt32BE(Number(fields.l1Size ?? 2), 36);
  b.writeBigUInt64BE(BigInt(fields.l1Offset ?? 0x30000), 40);
  b.writeBigUInt64BE(BigInt(fields.refOffset ?? 0x10000), 48);
  b.writeUInt32BE(Number(fields.refClusters ?? 1), 56);
  b.writeBigUInt64BE(BigInt(fields.incompatible ?? 0), 72);
  b.writeBigUInt64BE(BigInt(fields.compatible ?? 0), 80);
  b.writeUInt32BE(Number(fields.refcountOrder ?? 4), 96);
  b.writeUInt32BE(112, 100);
  b[104] = Number(fields.compression ?? 0);
  let at = 112;
  for (const e of extensions) {
    e.copy(b, at);
    at += e.length;
  }
  return b;
}

function extension(type: number, data: Buffer): Buffer {
  const e = Buffer.alloc(8 + Math.ceil(data.length / 8) * 8);
  e.writeUInt32BE(type, 0);
  e.writeUInt32BE(data.length, 4);
  data.copy(e, 8);
  return e;
}

t.test('1 header fields at the spec offsets; the header bytes ublk-ts rewrites', async (t) => {
  const h = parseHeader(header({ size: 5n << 30n, l1Size: 10, compatible: 1n, refcountOrder: 5, compression: COMPRESSION_ZSTD, incompatible: 8n }), 1 << 30);
  t.match(h, { version: 3, clusterBits: 16, clusterSize: 65536, size: 5 * 2 ** 30, l1Size: 10, l1TableOffset: 0x30000, refcountTableOffset: 0x10000, refcountTableClusters: 1 });
  t.match(h, { compatible: 1n, incompatible: 8n, refcountOrder: 5, headerLength: 112, compressionType: COMPRESSION_ZSTD });
  t.same([HDR_REFCOUNT_TABLE_OFFSET, HDR_INCOMPATIBLE, HDR_AUTOCLEAR], [48, 72, 88]);
  // Version 2 has no fields past 72 (there its header extensions begin): refcount_order is 4.
  t.match(parseHeader(header({ version: 2, refcountOrder: 5 }), 1 << 30), { version: 2, refcountOrder: 4, headerLength: 72, incompatible: 0n });
});

t.test('2 extensions: backing format, feature names, data file; the backing file name', async (t) => {
  const names = Buffer.alloc(48);
  names[0] = 0; // incompatible
  names[1] = 20;
  names.write('frobnication', 2);
  const b = header({}, [extension(0xe2792aca, Buffer.from('raw')), extension(0x6803f857, names), extension(0, Buffer.alloc(0))]);
  b.writeBigUInt64BE(1024n, 8);
  b.writeUInt32BE(8, 16);
  b.write('base.img', 1024);
  const h = parseHeader(b, 1 << 30);
  t.equal(h.backingFile, 'base.img');
  t.equal(h.backingFormat, 'raw');
  t.equal(h.incompatibleNames.get(20), 'frobnication');
  t.equal(unsupported({ ...h, incompatible: 1n << 20n }, false), 'it uses incompatible features ublk-ts does not know (frobnication)');
  const ext = parseHeader(header({}, [extension(0x44415441, Buffer.from('data.raw'))]), 1 << 30);
  t.equal(unsupported(ext, false), 'its data lives in an external data file');
});

t.test('3 malformed headers are refused with the reason', async (t) => {
  t.throws(() => parseHeader(header({ version: 4 }), 1 << 30), /qcow2 version 4 is not supported/);
  t.throws(() => parseHeader(header({ clusterBits: 22 }), 1 << 30), /cluster_bits 22 is outside 9\.\.21/);
  t.throws(() => parseHeader(header({ l1Offset: 0x30001 }), 1 << 30), /l1_table_offset 196609 is not cluster-aligned/);
  t.throws(() => parseHeader(header({ l1Size: 1 << 20 }), 0x40000), /the L1 table lies beyond the end of the file/);
  t.throws(() => parseHeader(header({ refcountOrder: 7 }), 1 << 30), /refcount_order 7 is above 6/);
});

t.test('4 L1/L2 entries: offset in bits 9-55, COPIED bit 63, compressed bit 62, zero bit 0', async (t) => {
  t.equal(L2_COPIED, 0x80000000, 'bit 63 is bit 31 of the high word');
  t.equal(L2_COMPRESSED, 0x40000000, 'bit 62');
  t.equal(L2_ZERO, 1, 'bit 0 of the low word');
  const off = 0x001f_1234_5670_0000; // bits 20-52 (a double holds it exactly)
  t.equal(entryOffset(entryHi(off, L2_COPIED), entryLo(off, L2_ZERO)), off);
  t.equal(entryHi(off, L2_COPIED), 0x801f1234);
  t.equal(entryLo(off, L2_ZERO), 0x56700001);
  t.equal(entryOffset(0xffffffff, 0xffffffff), 2 ** 56 - 512, 'flags and reserved bits are not part of the offset');
});

t.test('5 compressed descriptors: x = 62 - (cluster_bits - 8) offset bits, then extra sectors', async (t) => {
  // 64 KiB clusters: x = 54. Offset 0x12345 + 5 extra sectors.
  const v = (BigInt(5) << 54n) | 0x12345n | (1n << 62n);
  const hi = Number(v >> 32n);
  const lo = Number(v & 0xffffffffn);
  const c = compressedExtent(hi, lo, 16);
  t.same(c, { offset: 0x12345, length: 6 * 512 - 0x145 });
  t.same(compressedClusters(c, 16), [1, 1], 'the sectors from 0x12200 to 0x12e00 lie in host cluster 1');
  const across = compressedExtent(0, 0xfff0, 16); // offset 0xfff0, one sector: 0xfe00..0x10000
  t.same(compressedClusters(across, 16), [0, 0]);
  const two = { offset: 0xfff0, length: 0x400 }; // runs into the next cluster
  t.same(compressedClusters(two, 16), [0, 1]);
  // 2 MiB clusters: x = 49.
  const big = (1n << 49n) | 0x1000n;
  t.same(compressedExtent(Number(big >> 32n), Number(big & 0xffffffffn), 21), { offset: 0x1000, length: 1024 });
});

t.test('6 refcount entries of 1 to 64 bits, big-endian, sub-byte ones from the least significant bit', async (t) => {
  for (let order = 0; order <= 6; order++) {
    const bits = 1 << order;
    const block = new Uint8Array(512);
    const max = order >= 5 ? 0xffffffff : 2 ** bits - 1;
    setRefcount(block, 3, order, max);
    setRefcount(block, 4, order, 1);
    t.equal(getRefcount(block, 3, order), max, `${bits}-bit: the largest value`);
    t.equal(getRefcount(block, 4, order), 1, `${bits}-bit: a neighbour keeps its own`);
    t.equal(getRefcount(block, 2, order), 0);
  }
  const b16 = new Uint8Array(8);
  setRefcount(b16, 1, 4, 0x0102);
  t.same([...b16.subarray(2, 4)], [1, 2], '16-bit entries are big-endian');
  const b1 = new Uint8Array(1);
  setRefcount(b1, 0, 0, 1);
  setRefcount(b1, 7, 0, 1);
  t.equal(b1[0], 0x81, '1-bit: entry 0 is the least significant bit');
});

t.test('7 a zstd frame is cut at its end, before the padding that follows it', async (t) => {
  // Magic, descriptor (single segment, 1-byte content size), size 5, one raw last block of 5 bytes, then padding.
  const frame = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05, 0x29, 0x00, 0x00, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0xaa, 0xbb]);
  t.equal(zstdFrameLength(frame), 14);
});
