/**
 * The worker threads of one device, one per hardware queue (design.md,
 * "Threads and processes"): started together, ready together, and stopped
 * within bounds; a queue takes a spare worker when the daemon started some
 * (spare-workers.ts). Workers speak QueueMessages (queue-worker.ts); the pool
 * speaks to them through each queue's control word and kick eventfd, which
 * wake a thread blocked in io_uring_enter.
 */
import { Worker } from 'node:worker_threads';
import { EventFd } from '../sys/eventfd.js';
import { newQueueLatency } from './latency.js';
import { newQueueStats } from './queue-stats.js';
import { QUEUE_STOP } from './queue.js';
import type { QueueMessage, QueueWorkerData } from './queue-worker.js';
import { WORKER_URL, queueThreadName, takeSpareWorker } from './spare-workers.js';

/** Longest wait for a worker to load its target and fetch every tag (a loaded machine may be slow). */
export const READY_TIMEOUT_MS = 60_000;
/** Longest wait for a worker told to stop now before it is terminated, and then for the termination. */
export const FORCE_TIMEOUT_MS = 5_000;

export interface QueuePoolOptions {
  devId: number;
  queues: number;
  depth: number;
  maxIoSize: number;
  /** /dev/ublkc<devId>, shared by every queue. */
  cdevFd: number;
  pollMaxNs: number;
  targetModule: string;
  /** The target device's queueData, cloned into each worker. */
  queueData: unknown;
  /** Each queue's CPU mask (cpu_set_t bytes) for its thread, or null: run anywhere. */
  cpuMasks?: (Uint8Array | null)[];
}

const TIMEOUT = Symbol('timeout');

/** `p`'s value, or TIMEOUT when it takes longer than `ms`. */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<typeof TIMEOUT>((resolve) => (timer = setTimeout(resolve, ms, TIMEOUT)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
export { TIMEOUT };

class QueueThread {
  readonly worker: Worker;
  readonly kick = new EventFd(0);
  readonly control = new Int32Array(new SharedArrayBuffer(4));
  readonly stats = newQueueStats();
  readonly latency = newQueueLatency();
  targetStats: SharedArrayBuffer | null = null;
  /** Why the queue failed (its 'failed' message, or how the thread died). */
  error: string | null = null;
  readonly ready: Promise<void>;
  /** It has reported ready. */
  isReady = false;
  readonly exited: Promise<void>;
  /** The thread has not ended yet. */
  running = true;

  constructor(o: QueuePoolOptions, readonly qId: number) {
    const data: QueueWorkerData = {
      devId: o.devId,
      qId,
      depth: o.depth,
      maxIoSize: o.maxIoSize,
      cdevFd: o.cdevFd,
      kickFd: this.kick.fd,
      control: this.control,
      stats: this.stats,
      latency: this.latency,
      pollMaxNs: o.pollMaxNs,
      targetModule: o.targetModule,
      queueData: o.queueData,
      cpuMask: o.cpuMasks?.[qId] ?? null,
    };
    const spare = takeSpareWorker(o.targetModule);
    spare?.postMessage(data);
    this.worker = spare ?? new Worker(WORKER_URL, { workerData: data, name: queueThreadName(o.devId, qId) });
    let onReady: () => void = () => undefined;
    this.ready = new Promise<void>((resolve) => (onReady = resolve));
    this.worker.on('message', (m: QueueMessage) => {
      if (m.type === 'ready') {
        this.targetStats = m.statsBuffer;
        this.isReady = true;
        onReady();
      } else if (m.type === 'failed') {
        this.error ??= m.message;
      }
    });
    this.worker.on('error', (e) => (this.error ??= `the worker thread died: ${e.message}`));
    this.exited = new Promise<void>((resolve) =>
      this.worker.on('exit', () => {
        this.running = false;
        this.kick.close();
        resolve();
      }),
    );
  }

  /** Tells the thread to stop now: it fails what its target holds with EIO and ends. */
  stop(): void {
    if (!this.running) return;
    Atomics.store(this.control, 0, QUEUE_STOP);
    this.kick.signal();
  }
}

export class QueuePool {
  private readonly threads: QueueThread[] = [];
  /** Exits before this is set are failures. */
  private stopping = false;
  private reportFailure: (message: string) => void = () => undefined;
  /**
   * Resolves with the first failure, "queue N: reason": a queue that could
   * not serve, or whose thread ended while the device was meant to run.
   */
  readonly failed: Promise<string>;

  private constructor() {
    this.failed = new Promise<string>((resolve) => (this.reportFailure = resolve));
  }

  private spawn(o: QueuePoolOptions, q: number): void {
    const t = new QueueThread(o, q);
    this.threads.push(t);
    void t.exited.then(() => {
      if (t.error !== null) this.reportFailure(`queue ${q}: ${t.error}`);
      else if (!this.stopping) this.reportFailure(`queue ${q}: its thread ended while the device was live`);
    });
  }

  /** Starts a worker per queue and resolves once every one has fetched all its tags; on failure none is left running. */
  static async start(o: QueuePoolOptions): Promise<QueuePool> {
    const pool = new QueuePool();
    let r: unknown;
    try {
      for (let q = 0; q < o.queues; q++) pool.spawn(o, q);
      const ready = Promise.all(pool.threads.map((t) => t.ready));
      r = await within(Promise.race([ready, pool.failed]), READY_TIMEOUT_MS);
    } catch (e) {
      r = e instanceof Error ? e.message : String(e);
    }
    if (r === TIMEOUT) {
      const late = pool.threads.filter((t) => !t.isReady).map((t) => t.qId);
      const which = late.length === 1 ? `queue ${late[0]} was` : `queues ${late.join(', ')} were`;
      r = `${which} not ready within ${READY_TIMEOUT_MS / 1000} s: not yet loaded the target and fetched every tag`;
    }
    if (typeof r === 'string') {
      await pool.stopNow().catch(() => undefined);
      throw new Error(r);
    }
    return pool;
  }

  /** Per-queue dispatcher counters (shared memory each worker writes). */
  stats(): Float64Array[] {
    return this.threads.map((t) => t.stats);
  }

  /** Per-queue latency histograms (shared memory each worker writes). */
  latency(): Float64Array[] {
    return this.threads.map((t) => t.latency);
  }

  /** Per-queue target counters (the targets' statsBuffers). */
  targetStats(): (SharedArrayBuffer | null)[] {
    return this.threads.map((t) => t.targetStats);
  }

  /** From now on a thread that ends is not a failure: the device is being stopped. */
  expectExit(): void {
    this.stopping = true;
  }

  /** Whether every worker ended on its own within `ms` (after STOP_DEV the kernel aborts their fetches). */
  async drained(ms: number): Promise<boolean> {
    return (await within(Promise.all(this.threads.map((t) => t.exited)), ms)) !== TIMEOUT;
  }

  /**
   * Tells every worker to stop now, then terminates any that has not ended
   * within FORCE_TIMEOUT_MS. Throws when a thread would not end at all.
   */
  async stopNow(): Promise<void> {
    this.expectExit();
    for (const t of this.threads) t.stop();
    if (await this.drained(FORCE_TIMEOUT_MS)) return;
    // Stuck outside io_uring_enter (a target looping in JS): V8 can stop it there.
    await within(Promise.all(this.threads.map((t) => t.worker.terminate())), FORCE_TIMEOUT_MS);
    const stuck = this.threads.filter((t) => t.running).map((t) => t.qId);
    if (stuck.length > 0) throw new Error(`queue ${stuck.join(', ')} did not end within ${(2 * FORCE_TIMEOUT_MS) / 1000} s`);
  }
}
