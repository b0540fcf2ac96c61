/**
 * A target served on the host, without ublk_drv: the real dispatcher
 * (ublk/queue.ts), one per queue, each against a FakeUblk, all in this
 * thread on the event loop (the target runs as an async one). Requests are
 * promises, as a block device's user would see them: a READ resolves to its
 * bytes, and a short READ or WRITE is sent again for the rest, as ublk_drv
 * does.
 */
import { EventFd } from '../../sys/eventfd.js';
import { UBLK_IO_F_FUA, UBLK_IO_F_NOUNMAP, UBLK_IO_OP_DISCARD, UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE, UBLK_IO_OP_WRITE_ZEROES } from '../../sys/ublk/io.js';
import type { Target, TargetDevice } from '../../target/target.js';
import { newQueueLatency } from '../../ublk/latency.js';
import { type QueueStatName, newQueueStats, readQueueStats } from '../../ublk/queue-stats.js';
import { UblkQueue } from '../../ublk/queue.js';
import { type Commit, FakeUblk } from './fake-ublk.js';

export class IoError extends Error {
  constructor(
    readonly op: number,
    readonly result: number,
  ) {
    super(`op ${op} failed with ${result}`);
  }
}

interface Q {
  fake: FakeUblk;
  queue: UblkQueue;
  stats: Float64Array;
  kick: EventFd;
  run: Promise<void>;
  free: number[];
  waiting: ((tag: number) => void)[];
  pending: Map<number, (c: Commit) => void>;
}

export interface ClientOptions {
  queues?: number;
  depth?: number;
  maxIoSize?: number;
}

export class TargetClient {
  readonly device: TargetDevice;
  private readonly qs: Q[];
  readonly maxIoSize: number;

  private constructor(device: TargetDevice, qs: Q[], maxIoSize: number) {
    this.device = device;
    this.qs = qs;
    this.maxIoSize = maxIoSize;
  }

  static async open<O>(target: Target<O>, options: O, opts: ClientOptions = {}): Promise<TargetClient> {
    const device = await target.open(options);
    const asAsync = { ...target, sync: false } as Target<never>;
    const depth = opts.depth ?? 16;
    const maxIoSize = opts.maxIoSize ?? 512 * 1024;
    const qs: Q[] = [];
    try {
      for (let qId = 0; qId < Math.min(opts.queues ?? 1, device.queueLimit?.max ?? Infinity); qId++) {
        const fake = new FakeUblk(depth);
        const kick = new EventFd(0);
        const control = new Int32Array(new SharedArrayBuffer(4));
        const stats = newQueueStats();
        const queue = new UblkQueue(
          { devId: 0, qId, depth, maxIoSize, cdevFd: -1, kickFd: kick.fd, control, stats, latency: newQueueLatency(), pollMaxNs: 0 },
          asAsync,
          fake.attach,
        );
        await queue.attach(asAsync, device.queueData);
        queue.fetchAll();
        const q: Q = { fake, queue, stats, kick, run: Promise.resolve(), free: [], waiting: [], pending: new Map() };
        for (let tag = 0; tag < depth; tag++) q.free.push(tag);
        fake.onCommit = (c) => {
          const done = q.pending.get(c.tag);
          q.pending.delete(c.tag);
          done?.(c);
        };
        q.run = queue.run();
        qs.push(q);
      }
    } catch (e) {
      await device.close?.();
      throw e;
    }
    const client = new TargetClient(device, qs, maxIoSize);
    TargetClient.opened.add(client);
    return client;
  }

  /** Clients not closed yet: a test that failed half-way closes them in its teardown, so no thread keeps the process alive. */
  private static readonly opened = new Set<TargetClient>();

  /** Closes every client still open, ignoring their errors (the test has failed already). */
  static async closeAll(): Promise<void> {
    await Promise.allSettled([...TargetClient.opened].map((c) => c.close()));
  }

  get queues(): number {
    return this.qs.length;
  }

  /** Queue qId's dispatcher counters, as `ublk stats` shows them. */
  queueStats(qId: number): Record<QueueStatName, number> {
    return readQueueStats(this.qs[qId].stats);
  }

  /** Each queue's target counters, as the daemon hands them to the target's stats(). */
  statsBuffers(): (SharedArrayBuffer | null)[] {
    return this.qs.map((q) => q.queue.targetStatsBuffer());
  }

  private async tag(q: Q): Promise<number> {
    const t = q.free.pop();
    if (t !== undefined) return t;
    return new Promise((resolve) => q.waiting.push(resolve));
  }

  private release(q: Q, tag: number): void {
    const w = q.waiting.shift();
    if (w !== undefined) w(tag);
    else q.free.push(tag);
  }

  /** One request; `fill` puts write data in the tag's buffer, `take` reads what a READ left there. */
  private async request(qId: number, op: number, flags: number, offset: number, length: number, fill?: (buf: Uint8Array) => void, take?: (buf: Uint8Array, n: number) => void): Promise<number> {
    const q = this.qs[qId];
    const tag = await this.tag(q);
    try {
      fill?.(q.queue.buffer(tag));
      const c = await new Promise<Commit>((resolve) => {
        q.pending.set(tag, resolve);
        q.fake.request(tag, { op, flags, offset, length });
      });
      if (c.result >= 0) take?.(q.queue.buffer(tag), c.result);
      return c.result;
    } finally {
      this.release(q, tag);
    }
  }

  async read(offset: number, length: number, qId = 0): Promise<Buffer> {
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = Math.min(length - done, this.maxIoSize);
      const r = await this.request(qId, UBLK_IO_OP_READ, 0, offset + done, n, undefined, (buf, got) => out.set(buf.subarray(0, got), done));
      if (r <= 0) throw new IoError(UBLK_IO_OP_READ, r);
      done += r; // short: ublk_drv sends the rest again
    }
    return out;
  }

  async write(offset: number, data: Uint8Array, opts: { fua?: boolean; qId?: number } = {}): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const n = Math.min(data.length - done, this.maxIoSize);
      const from = done;
      const r = await this.request(opts.qId ?? 0, UBLK_IO_OP_WRITE, opts.fua ? UBLK_IO_F_FUA : 0, offset + done, n, (buf) => buf.set(data.subarray(from, from + n)));
      if (r <= 0) throw new IoError(UBLK_IO_OP_WRITE, r);
      done += r;
    }
  }

  async flush(qId = 0): Promise<void> {
    const r = await this.request(qId, UBLK_IO_OP_FLUSH, 0, 0, 0);
    if (r !== 0) throw new IoError(UBLK_IO_OP_FLUSH, r);
  }

  async discard(offset: number, length: number, qId = 0): Promise<void> {
    const r = await this.request(qId, UBLK_IO_OP_DISCARD, 0, offset, length);
    if (r !== 0) throw new IoError(UBLK_IO_OP_DISCARD, r);
  }

  async writeZeroes(offset: number, length: number, opts: { noUnmap?: boolean; qId?: number } = {}): Promise<void> {
    const r = await this.request(opts.qId ?? 0, UBLK_IO_OP_WRITE_ZEROES, opts.noUnmap ? UBLK_IO_F_NOUNMAP : 0, offset, length);
    if (r !== 0) throw new IoError(UBLK_IO_OP_WRITE_ZEROES, r);
  }

  /** Ends the queues as STOP_DEV would (what is in flight completes first), then closes the device. */
  async close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private closing: Promise<void> | null = null;

  private async closeOnce(): Promise<void> {
    TargetClient.opened.delete(this);
    for (const q of this.qs) q.fake.abortAll();
    const runs = await Promise.allSettled(this.qs.map((q) => q.run));
    for (const q of this.qs) {
      q.queue.close();
      q.kick.close();
      q.fake.close();
    }
    await this.device.close?.();
    const failed = runs.find((r) => r.status === 'rejected');
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
  }
}
