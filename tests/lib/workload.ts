// Requests a block device's user makes, against a TargetClient: random
// writes and reads checked against a model, and whole-device reads.
import { randomBytes } from 'node:crypto';
import { IoError, type TargetClient } from './target-client.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Random writes and reads of 512 B … 1 MiB on every queue, 24 in flight,
 * never two overlapping in flight (an order the device does not promise);
 * `model` gets what was written. Every read must match the model.
 */
export async function workload(c: TargetClient, model: Buffer, count: number): Promise<number> {
  const slot = Math.floor(model.length / 24 / (64 * KiB)) * 64 * KiB;
  let bad = 0;
  for (let i = 0; i < count; i += 24) {
    await Promise.all(
      Array.from({ length: 24 }, async (_, j) => {
        const len = Math.min([512, 4 * KiB, 64 * KiB, 128 * KiB, MiB][(i + j) % 5], slot);
        const off = j * slot + Math.floor(Math.random() * ((slot - len) / 512)) * 512;
        const q = (i + j) % c.queues;
        if ((i + j) % 3 === 0) {
          const r = await c.read(off, len, q);
          if (!r.equals(model.subarray(off, off + len))) bad++;
        } else {
          const d = randomBytes(len);
          d.copy(model, off);
          await c.write(off, d, { qId: q, fua: (i + j) % 7 === 0 });
        }
      }),
    );
  }
  return bad;
}

/** 0 for a request that succeeded, else the -errno it failed with. */
export function result(request: Promise<unknown>): Promise<number> {
  return request.then(
    () => 0,
    (e: unknown) => {
      if (e instanceof IoError) return e.result;
      throw e;
    },
  );
}

export async function readAll(c: TargetClient, size: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let off = 0; off < size; off += MiB) parts.push(await c.read(off, Math.min(MiB, size - off), (off / MiB) % c.queues));
  return Buffer.concat(parts);
}

