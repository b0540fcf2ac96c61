// The per-queue dispatcher (ublk/queue.ts) against a fake kernel side
// (tests/lib/fake-ublk.ts): what reaches the target, what goes back to the
// kernel, how a queue ends — by abort, by a stop request, or by an error
// (a throwing or rejecting target, a failing io_uring_enter or eventfd).
import t from 'tap';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { EventFd } from '../../sys/eventfd.js';
import * as file from '../../sys/file.js';
import { UBLK_IO_F_FUA, UBLK_IO_OP_DISCARD, UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE } from '../../sys/ublk/io.js';
import type { QueueContext, Target, TargetQueue } from '../../target/target.js';
import loop from '../../target/loop/index.js';
import { latencyCount, latencyPercentile, newQueueLatency, readQueueLatency } from '../../ublk/latency.js';
import { QS, newQueueStats } from '../../ublk/queue-stats.js';
import { QUEUE_STOP, UblkQueue } from '../../ublk/queue.js';
import { FakeUblk } from '../lib/fake-ublk.js';

const EIO = -5;
const ENOSPC = -28;
const KiB = 1024;
const MiB = 1024 * KiB;

/** What setup() needs of a test: somewhere to register cleanup. */
interface Tap {
  teardown(fn: () => void): void;
}

interface Setup {
  fake: FakeUblk;
  queue: UblkQueue;
  stats: Float64Array;
  latency: Float64Array;
  /** Asks the queue to stop now, as the daemon's forced stop does. */
  stop(): void;
}

/** A queue of `depth` tags serving `target`, every tag fetched; closed at teardown (after run() ended). */
async function setup(tt: Tap, target: Target<never>, opts: { depth?: number; maxIoSize?: number; kickFd?: number; queueData?: unknown } = {}): Promise<Setup> {
  const depth = opts.depth ?? 4;
  const fake = new FakeUblk(depth);
  const kick = new EventFd(0); // blocking, as the daemon's
  const control = new Int32Array(new SharedArrayBuffer(4));
  const stats = newQueueStats();
  const latency = newQueueLatency();
  const queue = new UblkQueue(
    { devId: 0, qId: 0, depth, maxIoSize: opts.maxIoSize ?? 64 * KiB, cdevFd: -1, kickFd: opts.kickFd ?? kick.fd, control, stats, latency, pollMaxNs: 0 },
    target,
    fake.attach,
  );
  tt.teardown(() => {
    queue.close();
    kick.close();
  });
  await queue.attach(target, opts.queueData);
  queue.fetchAll();
  return {
    fake,
    queue,
    stats,
    latency,
    stop() {
      Atomics.store(control, 0, QUEUE_STOP);
      kick.signal();
    },
  };
}

/** A target answering from `answer` (sync unless `sync: false`); every request it sees lands in `seen`. */
function testTarget(answer: (ctx: QueueContext, tag: number, op: number, length: number) => ReturnType<TargetQueue['queueIo']>, sync = true) {
  const seen: number[][] = [];
  const target: Target<never> = {
    name: 'test',
    sync,
    open: () => ({ size: 1 << 30 }),
    createQueue: (ctx) => ({
      queueIo(tag, op, flags, offset, length) {
        seen.push([tag, op, flags, offset, length]);
        return answer(ctx, tag, op, length);
      },
    }),
  };
  return { target, seen };
}

const byTag = (a: { tag: number }, b: { tag: number }) => a.tag - b.tag;

t.test('1 requests reach the target decoded; each result goes back in its commit; aborts end the queue', async (t) => {
  const { target, seen } = testTarget((_ctx, _tag, op, length) => (op <= UBLK_IO_OP_WRITE ? length : 0));
  const { fake, queue, stats, latency } = await setup(t, target);
  fake.request(0, { op: UBLK_IO_OP_READ, offset: 8 * KiB, length: 4 * KiB });
  fake.request(1, { op: UBLK_IO_OP_WRITE, flags: UBLK_IO_F_FUA, offset: 2 ** 40 + 512, length: 8 * KiB });
  fake.request(2, { op: UBLK_IO_OP_FLUSH, offset: 0, length: 0 });
  fake.request(3, { op: UBLK_IO_OP_DISCARD, offset: 0, length: 64 * KiB });
  fake.onCommit = () => {
    if (fake.commits.length === 4) fake.abortAll();
  };
  await queue.run();
  t.same(seen.sort((a, b) => a[0] - b[0]), [
    [0, UBLK_IO_OP_READ, 0, 8 * KiB, 4 * KiB],
    [1, UBLK_IO_OP_WRITE, UBLK_IO_F_FUA, 2 ** 40 + 512, 8 * KiB],
    [2, UBLK_IO_OP_FLUSH, 0, 0, 0],
    [3, UBLK_IO_OP_DISCARD, 0, 0, 64 * KiB],
  ]);
  t.same([...fake.commits].sort(byTag), [
    { tag: 0, result: 4 * KiB },
    { tag: 1, result: 8 * KiB },
    { tag: 2, result: 0 },
    { tag: 3, result: 0 },
  ]);
  t.same([stats[QS.reads], stats[QS.writes], stats[QS.flushes], stats[QS.discards], stats[QS.errors]], [1, 1, 1, 1, 0]);
  t.equal(stats[QS.inFlight], 0);
  const lat = readQueueLatency(latency);
  t.same([lat.read, lat.write, lat.flush, lat.discard].map(latencyCount), [1, 1, 1, 1], 'each op timed once');
});

t.test('2 the one short-IO rule: part of a READ/WRITE is committed as is, 0 bytes becomes EIO, more than asked is clamped', async (t) => {
  const answers = [4 * KiB + 512, 0, 512, ENOSPC, 0, 0];
  const { target } = testTarget((_ctx, tag) => answers[tag]);
  const { fake, queue, stats } = await setup(t, target, { depth: 6 });
  fake.request(0, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB }); // more than asked
  fake.request(1, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB }); // nothing read
  fake.request(2, { op: UBLK_IO_OP_WRITE, offset: 0, length: 4 * KiB }); // short
  fake.request(3, { op: UBLK_IO_OP_WRITE, offset: 0, length: 4 * KiB }); // an error
  fake.request(4, { op: UBLK_IO_OP_WRITE, offset: 0, length: 4 * KiB }); // nothing written
  fake.request(5, { op: UBLK_IO_OP_FLUSH, offset: 0, length: 0 }); // 0 is a FLUSH's success
  fake.onCommit = () => {
    if (fake.commits.length === 6) fake.abortAll();
  };
  await queue.run();
  t.same([...fake.commits].sort(byTag).map((c) => c.result), [4 * KiB, EIO, 512, ENOSPC, EIO, 0]);
  t.equal(stats[QS.shortIos], 1, 'the short write is counted');
  t.equal(stats[QS.errors], 3);
});

t.test('3 a request the target still holds keeps the queue alive after the abort, until it completes', async (t) => {
  let ctx!: QueueContext;
  const { target } = testTarget((c, tag, _op, length) => {
    ctx = c;
    return tag === 0 ? undefined : length;
  }, false);
  const { fake, queue, latency } = await setup(t, target);
  fake.request(0, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB });
  fake.request(1, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB });
  fake.onCommit = (c) => {
    if (c.tag === 1) fake.abortAll();
  };
  let ended = false;
  const run = queue.run().then(() => (ended = true));
  await sleep(200);
  t.equal(ended, false, 'tag 0 is with the target: the queue waits for it');
  ctx.complete(2, 0); // a tag the kernel never sent: no commit, not timed
  ctx.complete(0, 4 * KiB);
  await run;
  t.same([...fake.commits].sort(byTag), [
    { tag: 0, result: 4 * KiB },
    { tag: 1, result: 4 * KiB },
  ]);
  const read = readQueueLatency(latency).read;
  t.equal(latencyCount(read), 2, 'the two reads, not the stray completion');
  t.ok(latencyPercentile(read, 100)! >= 200_000, 'the held read took its 200 ms and more');
});

t.test('4 promises: results arrive out of order; a rejection fails its request with EIO and ends the queue', async (t) => {
  const { target } = testTarget(async (_ctx, tag, _op, length) => {
    await sleep(10 * (4 - tag));
    return length - tag * 512;
  }, false);
  const { fake, queue } = await setup(t, target);
  for (let tag = 0; tag < 4; tag++) fake.request(tag, { op: UBLK_IO_OP_READ, offset: tag * 4 * KiB, length: 4 * KiB });
  fake.onCommit = () => {
    if (fake.commits.length === 4) fake.abortAll();
  };
  await queue.run();
  t.same(fake.commits.map((c) => c.tag), [3, 2, 1, 0], 'committed as they resolve');
  t.same([...fake.commits].sort(byTag).map((c) => c.result), [4096, 3584, 3072, 2560]);

  const never = new Promise<number>(() => undefined);
  const { target: rejecting } = testTarget((_ctx, tag) => (tag === 1 ? Promise.reject(new Error('boom')) : never), false);
  const q2 = await setup(t, rejecting);
  q2.fake.request(0, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB });
  q2.fake.request(1, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB });
  await t.rejects(q2.queue.run(), { name: 'QueueError', message: 'target test: queueIo(tag 1, op 0, 4096 bytes at 0) rejected: boom' });
  t.same([...q2.fake.commits].sort(byTag), [
    { tag: 0, result: EIO },
    { tag: 1, result: EIO },
  ], 'the rejected request and the one still held both fail with EIO');
});

t.test('5 a target that throws: its request fails with EIO, the queue ends with an error naming it', async (t) => {
  const { target } = testTarget((_ctx, tag, _op, length) => {
    if (tag === 2) throw new TypeError('x is undefined');
    return tag === 1 ? undefined : length;
  });
  const { fake, queue } = await setup(t, target);
  fake.request(0, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB });
  fake.request(1, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB });
  fake.request(2, { op: UBLK_IO_OP_WRITE, offset: 512, length: 1024 });
  await t.rejects(queue.run(), { name: 'QueueError', message: 'target test: queueIo(tag 2, op 1, 1024 bytes at 512) threw: x is undefined' });
  t.same([...fake.commits].sort(byTag), [
    { tag: 0, result: 4 * KiB },
    { tag: 1, result: EIO },
    { tag: 2, result: EIO },
  ]);
});

t.test('6 a stop request fails what the target holds with EIO and ends the queue without an error', async (t) => {
  const { target } = testTarget((_ctx, tag, _op, length) => (tag === 0 ? undefined : length));
  const s = await setup(t, target);
  s.fake.request(0, { op: UBLK_IO_OP_WRITE, offset: 0, length: 4 * KiB });
  s.fake.request(1, { op: UBLK_IO_OP_WRITE, offset: 0, length: 4 * KiB });
  s.fake.onCommit = (c) => {
    if (c.tag === 1) s.stop();
  };
  await s.queue.run();
  t.same([...s.fake.commits].sort(byTag), [
    { tag: 0, result: EIO },
    { tag: 1, result: 4 * KiB },
  ]);
  t.equal(latencyCount(readQueueLatency(s.latency).write), 2, 'the request failed with EIO at the stop is timed too');
});

t.test('7 io_uring_enter: a lasting error ends the queue; EBUSY is retried, but not for ever', async (t) => {
  const echo = () => testTarget((_ctx, _tag, _op, length) => length).target;
  const bad = await setup(t, echo());
  const ring = bad.queue.ring as unknown as { submitAndWait(n: number): number };
  ring.submitAndWait = () => -14; // EFAULT
  bad.fake.request(0, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB });
  await t.rejects(bad.queue.run(), { name: 'QueueError', message: 'io_uring_enter: Bad address' });

  const busy = await setup(t, echo());
  (busy.queue.ring as unknown as { submitAndWait(n: number): number }).submitAndWait = () => -16; // EBUSY
  const start = Date.now();
  await t.rejects(busy.queue.run(), { name: 'QueueError', message: /^io_uring_enter: Device or resource busy, 1000 times in a row$/ });
  t.ok(Date.now() - start >= 900, `EBUSY was retried for ${Date.now() - start} ms before the queue gave up`);

  const once = await setup(t, echo());
  const r = once.queue.ring as unknown as { submitAndWait(n: number): number };
  const real = r.submitAndWait.bind(r);
  let calls = 0;
  r.submitAndWait = (n) => {
    if (++calls > 3) return real(n);
    if (calls === 3) once.fake.request(0, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB });
    return -16;
  };
  once.fake.onCommit = () => once.fake.abortAll();
  await once.queue.run();
  t.same(once.fake.commits, [{ tag: 0, result: 4 * KiB }], 'a passing EBUSY costs nothing');
});

t.test('8 an eventfd the queue cannot wait on ends the queue (the stop request or completions would be lost otherwise)', async (t) => {
  const wronly = file.open('/dev/null', file.O_WRONLY);
  t.teardown(() => file.close(wronly));
  const echo = testTarget((_ctx, _tag, _op, length) => length).target;
  const k = await setup(t, echo, { kickFd: wronly });
  await t.rejects(k.queue.run(), { name: 'QueueError', message: "reading the daemon's stop eventfd: read: Bad file descriptor" });

  const withEventFd: Target<never> = {
    name: 'evt',
    sync: true,
    open: () => ({ size: 1 << 20 }),
    // no such fd (far above the fds this process has open)
    createQueue: () => ({ eventFd: 1 << 20, queueIo: () => 0 }),
  };
  const e = await setup(t, withEventFd);
  await t.rejects(e.queue.run(), { name: 'QueueError', message: 'target evt: polling its completion eventfd: poll: Bad file descriptor' });
});

t.test('9 the loop target, both engines, on a file that shrank: a read across its end is short, one past it EIO', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ublk-dispatch-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const engine of ['aio', 'uring'] as const) {
    const path = join(dir, `${engine}.img`);
    writeFileSync(path, Buffer.alloc(64 * KiB, 0x5a));
    const dev = loop.open({ file: path, engine }) as Awaited<ReturnType<typeof loop.open>>;
    t.teardown(() => dev.close?.());
    truncateSync(path, 6 * KiB);
    const s = await setup(t, loop as Target<never>, { queueData: dev.queueData });
    s.fake.request(0, { op: UBLK_IO_OP_READ, offset: 0, length: 8 * KiB });
    s.fake.request(1, { op: UBLK_IO_OP_READ, offset: 8 * KiB, length: 4 * KiB });
    s.fake.request(2, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB });
    s.fake.onCommit = () => {
      if (s.fake.commits.length === 3) s.fake.abortAll();
    };
    await s.queue.run();
    t.same([...s.fake.commits].sort(byTag), [
      { tag: 0, result: 6 * KiB },
      { tag: 1, result: EIO },
      { tag: 2, result: 4 * KiB },
    ], `${engine}: the part before the end, then EIO`);
    t.equal(s.stats[QS.shortIos], 1, `${engine}: one short read`);
    const buf = Buffer.from(s.queue.buffer(0).subarray(0, 6 * KiB));
    t.ok(buf.every((b) => b === 0x5a), `${engine}: the bytes read are the file's`);
  }
});

t.test('10 the AIO eventfd wakes a waiting queue round after round, though nobody reads it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ublk-dispatch-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'rounds.img');
  writeFileSync(path, Buffer.alloc(4 * MiB, 0x3c));
  const dev = loop.open({ file: path, engine: 'aio' }) as Awaited<ReturnType<typeof loop.open>>;
  t.teardown(() => dev.close?.());
  const s = await setup(t, loop as Target<never>, { queueData: dev.queueData });
  // One request at a time: each commit (made after the eventfd woke the
  // queue from its wait) brings the next request, 200 times. A read the
  // disk finishes before the queue would sleep needs no wake-up: 64 KiB
  // reads keep most of them on the disk long enough, even on a fast SSD
  // (CI saw 74 sleeps in 200 rounds with 4 KiB).
  const total = 200;
  let sent = 0;
  const next = (tag: number) => s.fake.request(tag, { op: UBLK_IO_OP_READ, offset: (sent++ % 64) * 64 * KiB, length: 64 * KiB });
  s.fake.onCommit = (c) => {
    if (sent < total) next(c.tag);
    else if (s.fake.commits.length === total) s.fake.abortAll();
  };
  next(0);
  await s.queue.run();
  t.equal(s.fake.commits.length, total, 'every request was served');
  t.ok(s.fake.commits.every((c) => c.result === 64 * KiB), 'each read got its 64 KiB');
  // A poll that fired once and never again would have hung the queue at its
  // second sleep; ten sleeps show the same poll woke it round after round.
  t.ok(s.stats[QS.waits] >= 10, `the queue slept while the reads were on the disk (${s.stats[QS.waits]} waits)`);
});

t.test('11 a queue holds RAM for the buffer pages its requests touch, not for depth × max IO size', async (t) => {
  const before = process.memoryUsage.rss();
  const { target } = testTarget((ctx, tag, _op, length) => {
    ctx.buffer(tag).fill(0x7e, 0, length);
    return length;
  });
  const { fake, queue } = await setup(t, target, { depth: 128, maxIoSize: 512 * KiB });
  const grew = process.memoryUsage.rss() - before;
  t.ok(grew < 16 * MiB, `128 tags of 512 KiB (64 MiB of buffers) added ${(grew / MiB).toFixed(1)} MiB to the RSS`);
  fake.request(127, { op: UBLK_IO_OP_READ, offset: 0, length: 4 * KiB });
  fake.onCommit = () => fake.abortAll();
  await queue.run();
  t.same(fake.commits, [{ tag: 127, result: 4 * KiB }]);
  t.ok(queue.buffer(127).subarray(0, 4 * KiB).every((b) => b === 0x7e), 'the last tag buffer holds what the target wrote');
});
