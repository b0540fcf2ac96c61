/**
 * Compressed clusters: qemu writes one raw deflate stream (zlib, window
 * bits -12) or one zstd frame per cluster, padded to 512-byte sectors with
 * whatever follows (often the next compressed cluster). Node 20's zlib has
 * no zstd, so zstd frames go to fzstd (pure JavaScript), cut to the frame's
 * own length first: fzstd would read the padding as a second frame.
 */
import { constants, inflateRawSync } from 'node:zlib';
import { decompress as zstdDecompress } from 'fzstd';
import { COMPRESSION_ZLIB } from './format.js';

/** Decompresses one cluster from `src` into `out` (exactly one cluster long); throws on bad data. */
export function decompressCluster(type: number, src: Uint8Array, out: Uint8Array): void {
  let data: Uint8Array;
  if (type === COMPRESSION_ZLIB) {
    // Z_SYNC_FLUSH: the stream may end without its final block (qemu stops once a cluster is out).
    data = inflateRawSync(src, { finishFlush: constants.Z_SYNC_FLUSH, maxOutputLength: out.length });
  } else {
    // Without an output buffer: fzstd is ten times faster so (it sizes its own from the frame header).
    data = zstdDecompress(src.subarray(0, zstdFrameLength(src)));
  }
  if (data.length !== out.length) throw new Error(`a compressed cluster gave ${data.length} bytes, not ${out.length}`);
  if (data !== out) out.set(data);
}

/** The length of the zstd frame at the start of `b` (RFC 8878, section 3.1.1), walking its block headers. */
export function zstdFrameLength(b: Uint8Array): number {
  if (b.length < 6 || b[0] !== 0x28 || b[1] !== 0xb5 || b[2] !== 0x2f || b[3] !== 0xfd) throw new Error('not a zstd frame');
  const fhd = b[4];
  const singleSegment = (fhd >> 5) & 1;
  const fcsSize = [singleSegment, 2, 4, 8][fhd >> 6];
  const didSize = [0, 1, 2, 4][fhd & 3];
  const checksum = (fhd >> 2) & 1;
  let at = 5 + (singleSegment ? 0 : 1) + didSize + fcsSize;
  for (;;) {
    if (at + 3 > b.length) throw new Error('a zstd frame runs past its data');
    const header = b[at] | (b[at + 1] << 8) | (b[at + 2] << 16);
    const last = header & 1;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    at += 3 + (type === 1 ? 1 : size); // an RLE block holds one byte
    if (last) break;
  }
  at += checksum * 4;
  if (at > b.length) throw new Error('a zstd frame runs past its data');
  return at;
}
