/**
 * Entry of a queue's worker thread: loads the target module, sets up the
 * queue, fetches every tag, reports ready, serves until the device stops.
 * Messages to the daemon: {type:'ready'} then {type:'exit'}, or {type:'error', message}.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadTarget } from '../target/registry.js';
import { UblkQueue, type QueueOptions } from './queue.js';

export interface QueueWorkerData extends QueueOptions {
  targetModule: string;
  queueData: unknown;
}

async function main(): Promise<void> {
  const data = workerData as QueueWorkerData;
  const target = await loadTarget(data.targetModule);
  const queue = new UblkQueue(data, target);
  try {
    await queue.attach(target, data.queueData);
    queue.fetchAll();
    parentPort!.postMessage({ type: 'ready', statsBuffer: queue.targetStatsBuffer() });
    await queue.run();
  } finally {
    queue.close();
  }
  parentPort!.postMessage({ type: 'exit' });
}

main().catch((e: unknown) => {
  parentPort!.postMessage({ type: 'error', message: e instanceof Error ? e.message : String(e) });
});
