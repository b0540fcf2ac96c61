/**
 * A qcow2 device's writer that a test kills (tests/host/qcow2-crash.test.ts):
 * serves the image on the host (TargetClient), writes 4 KiB blocks in the
 * order seed gives, flushes every few writes, and prints `flushed N` once
 * the first N writes are durable. It never closes the device: the test
 * ends it with SIGKILL, as a daemon's death would.
 *
 *   node qcow2-writer-child.js IMAGE SEED BLOCKS
 */
import qcow2 from '../../target/qcow2/index.js';
import { BLOCK, blockWrite } from './qcow2-blocks.js';
import { TargetClient } from './target-client.js';

async function main(): Promise<void> {
  const [image, seedArg, blocksArg] = process.argv.slice(2);
  const seed = Number(seedArg);
  const blocks = Number(blocksArg);
  const c = await TargetClient.open(qcow2, { file: image }, { queues: 2, depth: 16 });
  console.log('ready');
  let i = 0;
  for (let round = 1; ; round++) {
    // Eight writes at a time, spread over both queues, then every third batch a flush.
    const batch: Promise<void>[] = [];
    const seen = new Set<number>();
    for (let k = 0; k < 8; k++, i++) {
      const w = blockWrite(seed, blocks, i);
      if (seen.has(w.block)) break; // two writes of one block in flight: their order would be undefined
      seen.add(w.block);
      batch.push(c.write(w.block * BLOCK, w.data, { qId: k & 1 }));
    }
    await Promise.all(batch);
    if (round % 3 === 0) {
      await c.flush(i & 1);
      console.log(`flushed ${i}`);
    }
  }
}

void main();
