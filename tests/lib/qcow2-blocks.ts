/** The blocks tests/lib/qcow2-writer-child.ts writes, for the test that checks them. */

export const BLOCK = 4096;

/** Write number i of a run: which block it writes and the bytes (stamped with i, so a reader can tell writes apart). */
export function blockWrite(seed: number, blocks: number, i: number): { block: number; data: Buffer } {
  let x = (seed * 0x9e3779b1 + i * 0x85ebca6b) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x2c1b3c6d) >>> 0;
  x ^= x >>> 12;
  const block = (x >>> 0) % blocks;
  const data = Buffer.alloc(BLOCK);
  for (let at = 0; at < BLOCK; at += 8) {
    data.writeUInt32LE(i + 1, at);
    data.writeUInt32LE(block, at + 4);
  }
  return { block, data };
}
