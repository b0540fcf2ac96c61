/**
 * Queue worker threads started before their device exists. A daemon loads
 * its own modules, adds the device, and only then starts its queues, each
 * thread loading the queue and target modules again in a fresh isolate:
 * `ublk add` waited for the one and then the other (under the VM's TCG,
 * about 1.8 s each). A daemon that knows its target and queue count at
 * start calls startSpareWorkers first, so the threads load while it does;
 * QueuePool takes them and hands each its QueueWorkerData as a message.
 * Light on purpose: the daemon's entry imports it before anything heavy.
 */
import { Worker } from 'node:worker_threads';

export const WORKER_URL = new URL('./queue-worker.js', import.meta.url);

/** A queue's thread: the Worker's name, and its OS name (top -H, ps -L, perf) once the thread knows its queue. */
export function queueThreadName(devId: number, qId: number): string {
  return `ublk${devId}q${qId}`;
}

/** workerData of a spare: the target module to load while it waits for its QueueWorkerData. */
export interface SpareWorkerData {
  spare: true;
  targetModule: string;
}

interface Spare {
  worker: Worker;
  targetModule: string;
  /** Ended (a module that failed to load): not handed out; the queue starts a worker of its own and hears why. */
  ended: boolean;
}

const spares: Spare[] = [];

/** Starts `count` workers for queues of `targetModule`, for QueuePool to take (this process's only device). */
export function startSpareWorkers(count: number, targetModule: string): void {
  for (let i = 0; i < count; i++) {
    const workerData: SpareWorkerData = { spare: true, targetModule };
    const s: Spare = { worker: new Worker(WORKER_URL, { workerData, name: `ublk spare queue ${i}` }), targetModule, ended: false };
    // Until a queue takes it; an error then is the queue's (QueueThread listens).
    s.worker.on('error', () => undefined);
    s.worker.once('exit', () => (s.ended = true));
    spares.push(s);
  }
}

/** A live spare worker for `targetModule`, now the caller's, or null. */
export function takeSpareWorker(targetModule: string): Worker | null {
  for (;;) {
    const i = spares.findIndex((s) => s.targetModule === targetModule);
    if (i < 0) return null;
    const [s] = spares.splice(i, 1);
    if (!s.ended) return s.worker;
  }
}

/** Ends the spares no queue took (the kernel gave fewer queues, or the device failed first). */
export function endSpareWorkers(): void {
  for (const s of spares.splice(0)) void s.worker.terminate();
}
