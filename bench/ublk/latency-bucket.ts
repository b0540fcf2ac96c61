/**
 * ns per call of the latency histogram's per-request work (ublk/latency.ts),
 * against the formula it replaced (2 ** e and a divide), measured in the same
 * run: `node dist/bench/ublk/latency-bucket.js`. Latencies are drawn from
 * 1 µs to 100 ms with fractions, as a queue sees them.
 */
import { HIST_BUCKET0, HIST_LEN, LATENCY_BUCKETS, latencyBucket, newQueueLatency, recordLatency } from '../../ublk/latency.js';
import { table } from '../../tools/format.js';

function oldBucket(us: number): number {
  if (!(us >= 1)) return 0;
  if (us >= 2 ** 32) return LATENCY_BUCKETS - 1;
  const e = 31 - Math.clz32(us >>> 0);
  return 1 + e * 4 + Math.floor((us / 2 ** e - 1) * 4);
}

function oldRecord(h: Float64Array, op: number, us: number): void {
  const base = op * HIST_LEN;
  h[base] += us;
  h[base + HIST_BUCKET0 + oldBucket(us)]++;
}

const N = 1 << 12;
const values = new Float64Array(N);
let seed = 1;
for (let i = 0; i < N; i++) {
  seed = (seed * 1103515245 + 12345) >>> 0;
  values[i] = 10 ** ((seed / 2 ** 32) * 5); // log-uniform in [1, 1e5) µs
}

const CALLS = 20_000_000;
const M = N - 1;
const h = newQueueLatency();

// Each case is its own loop, so that its call is inlined as in the queue;
// it returns a sum, so that nothing is optimized away.
function loadOnly(): number {
  let s = 0;
  for (let i = 0; i < CALLS; i++) s += values[i & M];
  return s;
}
function bucketOld(): number {
  let s = 0;
  for (let i = 0; i < CALLS; i++) s += oldBucket(values[i & M]);
  return s;
}
function bucketNew(): number {
  let s = 0;
  for (let i = 0; i < CALLS; i++) s += latencyBucket(values[i & M]);
  return s;
}
function recordOld(): number {
  for (let i = 0; i < CALLS; i++) oldRecord(h, i & 3, values[i & M]);
  return h[HIST_BUCKET0 + 40];
}
function recordNew(): number {
  for (let i = 0; i < CALLS; i++) recordLatency(h, i & 3, values[i & M]);
  return h[HIST_BUCKET0 + 40];
}
const cases: [string, () => number][] = [
  ['loop and load only', loadOnly],
  ['latencyBucket, old', bucketOld],
  ['latencyBucket', bucketNew],
  ['recordLatency, old', recordOld],
  ['recordLatency', recordNew],
];

/** ns per call, the median of 7 rounds (the first round of each case warms it up). */
function time(run: () => number): number {
  const rounds: number[] = [];
  let sink = 0;
  for (let r = 0; r < 8; r++) {
    const t0 = process.hrtime.bigint();
    sink += run();
    if (r > 0) rounds.push(Number(process.hrtime.bigint() - t0) / CALLS);
  }
  if (sink === 0.5) process.stdout.write('\n');
  return rounds.sort((a, b) => a - b)[3];
}

const ns = new Map(cases.map(([name, run]) => [name, time(run)] as const));
const vsOld = (name: string): string => (ns.has(`${name}, old`) ? (ns.get(name)! / ns.get(`${name}, old`)!).toFixed(2) : '');
process.stdout.write(table([['per call', 'ns', 'vs old'], ...cases.map(([name]) => [name, ns.get(name)!.toFixed(2), vsOld(name)])]) + '\n');
