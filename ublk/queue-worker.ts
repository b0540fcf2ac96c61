/**
 * Entry of a queue's worker thread: loads the target module, sets up the
 * queue, fetches every tag, reports ready, serves until the device stops.
 * A spare (spare-workers.ts) loads the target module while it waits for its
 * QueueWorkerData, which comes as the first message.
 * It speaks to the daemon's QueuePool (queue-pool.ts) in QueueMessages only;
 * the daemon speaks back through the control word and the kick eventfd,
 * which reach the thread while it blocks in io_uring_enter.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { sched_setaffinity } from '../sys/native.js';
import { setThreadName } from '../sys/thread.js';
import { loadTarget } from '../target/registry.js';
import { UblkQueue, type QueueOptions } from './queue.js';
import { queueThreadName, type SpareWorkerData } from './spare-workers.js';

export interface QueueWorkerData extends QueueOptions {
  targetModule: string;
  queueData: unknown;
  /** The CPUs to run on (cpu_set_t bytes), or null: anywhere. */
  cpuMask: Uint8Array | null;
}

/** Worker → daemon. A worker that ends without 'failed' ended on purpose (the device stopped, or the daemon asked). */
export type QueueMessage =
  /** Every tag is fetched: START_DEV (or END_USER_RECOVERY) may go. */
  | { type: 'ready'; statsBuffer: SharedArrayBuffer | null }
  /** The queue cannot serve: the one line the daemon logs, before the thread ends. */
  | { type: 'failed'; message: string };

function post(m: QueueMessage): void {
  parentPort!.postMessage(m);
}

/** This queue's data: workerData, or for a spare the first message. */
async function queueData(): Promise<QueueWorkerData> {
  const given = workerData as QueueWorkerData | SpareWorkerData;
  if (!('spare' in given)) return given;
  // Into the module cache meanwhile; a failure is main's to report, once it loads the target for real.
  loadTarget(given.targetModule).catch(() => undefined);
  return new Promise((resolve) => parentPort!.once('message', resolve));
}

async function main(): Promise<void> {
  const data = await queueData();
  setThreadName(queueThreadName(data.devId, data.qId));
  // Best effort, as in ublksrv: a queue that cannot be pinned (a cpuset that
  // forbids those CPUs) serves as well from anywhere, just with more wake-ups
  // across CPUs.
  if (data.cpuMask !== null) sched_setaffinity(0, data.cpuMask);
  const target = await loadTarget(data.targetModule);
  const queue = new UblkQueue(data, target);
  try {
    await queue.attach(target, data.queueData);
    queue.fetchAll();
    post({ type: 'ready', statsBuffer: queue.targetStatsBuffer() });
    await queue.run();
  } finally {
    queue.close();
  }
}

main().catch((e: unknown) => post({ type: 'failed', message: e instanceof Error ? e.message : String(e) }));
