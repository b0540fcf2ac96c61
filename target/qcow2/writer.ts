/**
 * The metadata writer: one thread per writable qcow2 device that puts the
 * dirty metadata on disk (writeback.ts) whenever a queue asks for a flush
 * (FLUSH, FUA), and a last time when the device closes. Queues never wait
 * on metadata IO: they bump Ctl.FLUSH_REQ and go on serving; the writer
 * bumps Ctl.FLUSH_DONE and signals their eventfds.
 *
 * This module is both the daemon's handle on the thread and, loaded by the
 * Worker, the thread itself.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { LayerData } from './layer.js';
import { Ctl, Meta, type MetaData } from './meta.js';
import { writeback } from './writeback.js';

interface WriterData {
  qcow2MetadataWriter: true;
  meta: MetaData;
  layer: LayerData;
}

type WriterMessage = { type: 'ready' } | { type: 'failed'; message: string };

export class MetadataWriter {
  private readonly exited: Promise<void>;
  private failure: string | null = null;

  private constructor(
    private readonly worker: Worker,
    private readonly meta: MetaData,
  ) {
    this.exited = new Promise((resolve) => worker.once('exit', () => resolve()));
    worker.on('message', (m: WriterMessage) => {
      if (m.type === 'failed') this.failure ??= m.message;
    });
  }

  /** Starts the thread and waits until it runs. */
  static async start(meta: MetaData, layer: LayerData): Promise<MetadataWriter> {
    const data: WriterData = { qcow2MetadataWriter: true, meta, layer };
    const worker = new Worker(new URL(import.meta.url), { workerData: data });
    const w = new MetadataWriter(worker, meta);
    await new Promise<void>((resolve, reject) => {
      worker.once('message', (m: WriterMessage) => (m.type === 'ready' ? resolve() : reject(new Error(m.type === 'failed' ? m.message : 'no ready'))));
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the qcow2 metadata writer exited (${code}) before it ran`)));
    });
    return w;
  }

  /** The last flush (with the queues gone), then the thread ends; throws if a metadata write failed. */
  async stop(): Promise<void> {
    const ctl = this.meta.ctl;
    Atomics.store(ctl, Ctl.STOP, 1);
    Atomics.add(ctl, Ctl.FLUSH_REQ, 1); // pairs with the writer's Atomics.wait on FLUSH_REQ
    Atomics.notify(ctl, Ctl.FLUSH_REQ);
    await this.exited;
    if (this.failure !== null) throw new Error(this.failure);
  }
}

/** The thread: flush when asked, until told to stop. */
function run(data: WriterData): void {
  const meta = new Meta(data.meta, data.layer);
  const ctl = data.meta.ctl;
  const post = (m: WriterMessage) => parentPort!.postMessage(m);
  post({ type: 'ready' });
  for (;;) {
    const req = Atomics.load(ctl, Ctl.FLUSH_REQ);
    const stop = Atomics.load(ctl, Ctl.STOP) === 1;
    if (stop || req > Atomics.load(ctl, Ctl.FLUSH_DONE)) {
      try {
        writeback(meta, stop);
      } catch (e) {
        // Ctl.FAILED is set: every flush from now on fails with EIO.
        const message = `${data.layer.path}: writing qcow2 metadata failed: ${(e as Error).message}`;
        console.error(message);
        post({ type: 'failed', message });
      }
      Atomics.store(ctl, Ctl.FLUSH_DONE, req);
      meta.wakeAll();
      if (stop) return;
      continue;
    }
    Atomics.wait(ctl, Ctl.FLUSH_REQ, req); // woken by a queue's requestFlush() or stop()
  }
}

if (!isMainThread && (workerData as WriterData | undefined)?.qcow2MetadataWriter === true) run(workerData as WriterData);
