// The completions-per-reap histogram and the adaptive poller: what `ublk
// stats` and the benchmark print, and when a queue burns CPU polling.
import t from 'tap';
import { AioStats, Counter, HIST_MAX, REAP_PERCENTILES, histogramPercentiles } from '../../aio/stats.js';
import { AdaptivePoller, POLL_INITIAL_NS } from '../../sys/poller.js';

t.test('1 percentiles follow seed 000: 1st … 90th, 99.99th completions per reap', async (t) => {
  t.same([...REAP_PERCENTILES], [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99.99]);
  const s = new AioStats();
  t.same(s.percentiles(), new Array(11).fill(0), 'nothing reaped yet');
  // 100 reaps: 10 of 1, 10 of 2, …, 10 of 10 completions.
  for (let v = 1; v <= 10; v++) for (let i = 0; i < 10; i++) s.reaped(v);
  t.same(s.percentiles(), [1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  s.reaped(0);
  t.equal(s.c[Counter.EMPTY_REAPS], 1, 'empty reaps are counted apart');
  t.equal(s.c[Counter.REAPS], 100);
});

t.test('2 reaps larger than the histogram land in the overflow bucket', async (t) => {
  const s = new AioStats();
  s.reaped(HIST_MAX);
  s.reaped(HIST_MAX + 5000);
  t.equal(s.hist[HIST_MAX], 1);
  t.equal(s.hist[HIST_MAX + 1], 1);
  t.same(histogramPercentiles(s.hist, [50, 100]), [HIST_MAX, HIST_MAX + 1]);
});

t.test('3 another thread sees the counters through the SharedArrayBuffer', async (t) => {
  const { Worker } = await import('node:worker_threads');
  const s = new AioStats();
  s.reaped(3);
  s.c[Counter.IOS] = 42;
  const src = `
    const { parentPort, workerData } = require('node:worker_threads');
    const c = new Float64Array(workerData, 0, 2);
    parentPort.postMessage(c[0]);`;
  const w = new Worker(src, { eval: true, workerData: s.buffer });
  const seen = await new Promise((resolve) => w.once('message', resolve));
  await w.terminate();
  t.equal(seen, 42);
  t.same(new AioStats(s.buffer).percentiles([50]), [3], 'a view over the same buffer reads the histogram');
});

t.test('4 poll time grows from 4 µs by doubling while waits are short, and drops to 0 after a long one', async (t) => {
  const stats = new AioStats();
  const p = new AdaptivePoller(50_000, stats.pollCounters());
  t.equal(p.pollNs, 0, 'starts not polling');
  p.adjust(10_000);
  t.equal(p.pollNs, POLL_INITIAL_NS);
  p.adjust(10_000);
  t.equal(p.pollNs, 8000);
  p.adjust(10_000);
  t.equal(p.pollNs, 16000);
  p.adjust(12_000);
  t.equal(p.pollNs, 16000, 'a wait within pollNs is the sweet spot: no change');
  p.adjust(40_000);
  p.adjust(40_000);
  t.equal(p.pollNs, 50_000, 'capped at pollMaxNs');
  t.equal(stats.c[Counter.POLL_NS], 50_000, 'current poll time is in the stats');
  p.adjust(60_000);
  t.equal(p.pollNs, 0, 'a wait longer than pollMaxNs stops polling');
});

t.test('5 pollMaxNs 0 disables polling; run() reports hits and misses', async (t) => {
  const stats = new AioStats();
  const off = new AdaptivePoller(0, stats.pollCounters());
  off.adjust(1000);
  t.equal(off.pollNs, 0);
  let probes = 0;
  t.equal(off.run(() => (probes++, true)), false, 'does not even probe');
  t.equal(probes, 0);

  const p = new AdaptivePoller(1_000_000, stats.pollCounters());
  p.pollNs = 200_000;
  let n = 0;
  t.equal(p.run(() => ++n === 3), true, 'stops at the first probe that finds work');
  t.equal(n, 3);
  const t0 = performance.now();
  t.equal(p.run(() => false), false);
  t.ok(performance.now() - t0 >= 0.2, 'a miss spins for pollNs');
  t.equal(stats.c[Counter.POLL_HITS], 1);
  t.equal(stats.c[Counter.POLL_MISSES], 1);
});
