/**
 * Request latency histograms, one per op class per queue, in a
 * SharedArrayBuffer like the counters of queue-stats.ts: the queue's worker
 * is the one writer (plain stores), the daemon's main thread reads.
 *
 * Buckets are log-linear in microseconds: bucket 0 holds [0, 1 µs), then
 * each power of two [2^e, 2^(e+1)) µs, e = 0..31, is cut into 4 equal
 * sub-buckets, and the last bucket holds 2^32 µs (71 min) and more. A
 * bucket's upper bound is at most 25% above any value in it, 19% on
 * average (2^(1/4)).
 */

/**
 * The op classes timed. WRITE_ZEROES counts as a discard: both change a
 * range without moving data (loop: fallocate), and ublk_drv takes the
 * limits of both from its discard parameters: their costs belong together.
 */
export const LATENCY_OPS = ['read', 'write', 'flush', 'discard'] as const;
export type LatencyOp = (typeof LATENCY_OPS)[number];

export const LAT_READ = 0;
export const LAT_WRITE = 1;
export const LAT_FLUSH = 2;
export const LAT_DISCARD = 3;
/** A request of no timed class (zone ops, driver-private ops). */
export const LAT_NONE = 255;

const SUB_BITS = 2;
const SUBS = 1 << SUB_BITS;
/** Powers of two cut into sub-buckets: [1 µs, 2^32 µs). */
const OCTAVES = 32;
const OVERFLOW = 1 + OCTAVES * SUBS;
export const LATENCY_BUCKETS = OVERFLOW + 1;

/**
 * One op's histogram: [0] the sum of its latencies in µs, then the bucket
 * counts. Its request count is the sum of the buckets, not a slot of its
 * own: a reader of the live array then never sees a count that disagrees
 * with the buckets (Prometheus wants _count equal to the +Inf bucket).
 */
export const HIST_SUM = 0;
export const HIST_BUCKET0 = 1;
export const HIST_LEN = HIST_BUCKET0 + LATENCY_BUCKETS;

export function newQueueLatency(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(LATENCY_OPS.length * HIST_LEN * 8));
}

const TOP_US = 2 ** OCTAVES;
/**
 * A double's high word: sign, 11 bits of exponent (bias 1023), the top 20
 * bits of the mantissa. For 1 <= us < 2^32 the exponent is floor(log2(us))
 * and the top SUB_BITS mantissa bits are the sub-bucket, fractions
 * included: exact, and per request cheaper than 2 ** e and a divide.
 */
const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);
/** Which 32-bit half of f64 is the high word: 1 on a little-endian CPU. */
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;

/** The bucket a latency of `us` µs falls in. */
export function latencyBucket(us: number): number {
  if (!(us >= 1)) return 0; // also NaN: a clock step back is not a latency
  if (us >= TOP_US) return OVERFLOW;
  f64[0] = us;
  // hi >>> (20 - SUB_BITS) is (1023 + e) * SUBS + sub; the bucket is 1 + e * SUBS + sub.
  return (u32[HI] >>> (20 - SUB_BITS)) - 1023 * SUBS + 1;
}

/** The exclusive upper bound of bucket `b` in µs (Infinity for the last). */
export function latencyBucketUpperUs(b: number): number {
  if (b === 0) return 1;
  if (b >= OVERFLOW) return Infinity;
  const e = (b - 1) >> SUB_BITS;
  const sub = (b - 1) & (SUBS - 1);
  return 2 ** e * (1 + (sub + 1) / SUBS);
}

/** Adds one request of op class `op` that took `us` µs to a queue's histograms (the IO path: no allocation). */
export function recordLatency(h: Float64Array, op: number, us: number): void {
  const base = op * HIST_LEN;
  h[base + HIST_SUM] += us;
  h[base + HIST_BUCKET0 + latencyBucket(us)]++;
}

/** One op's histogram as data: the sum in µs and the bucket counts, trailing empty buckets left out. */
export interface LatencyHistogram {
  sumUs: number;
  buckets: number[];
}

/** A queue's histograms, copied out of its shared array (short: most buckets are empty). */
export function readQueueLatency(h: Float64Array): Record<LatencyOp, LatencyHistogram> {
  return Object.fromEntries(
    LATENCY_OPS.map((op, i) => {
      const base = i * HIST_LEN;
      let end = base + HIST_LEN;
      while (end > base + HIST_BUCKET0 && h[end - 1] === 0) end--;
      return [op, { sumUs: h[base + HIST_SUM], buckets: Array.from(h.subarray(base + HIST_BUCKET0, end)) }];
    }),
  ) as Record<LatencyOp, LatencyHistogram>;
}

export function latencyCount(h: LatencyHistogram): number {
  return h.buckets.reduce((s, n) => s + n, 0);
}

/** The histogram of all of `hs` (e.g. every queue's for one op). */
export function mergeLatency(hs: readonly LatencyHistogram[]): LatencyHistogram {
  const buckets: number[] = [];
  let sumUs = 0;
  for (const h of hs) {
    sumUs += h.sumUs;
    h.buckets.forEach((n, b) => (buckets[b] = (buckets[b] ?? 0) + n));
  }
  return { sumUs, buckets };
}

/**
 * The `p`th percentile (0 < p ≤ 100) in µs, or null without requests. It
 * is the upper bound of the bucket the percentile falls in, so an upper
 * bound with the buckets' resolution (at most 25% high, 19% on average);
 * Infinity when it falls in the last bucket.
 */
export function latencyPercentile(h: LatencyHistogram, p: number): number | null {
  const count = latencyCount(h);
  if (count === 0) return null;
  // The relative slack keeps p99.9 of 1000 at rank 999: 99.9 / 100 is a hair above 0.999 in binary.
  const rank = Math.max(1, Math.ceil((p / 100) * count * (1 - 1e-12)));
  let seen = 0;
  for (let b = 0; b < h.buckets.length; b++) {
    seen += h.buckets[b];
    if (seen >= rank) return latencyBucketUpperUs(b);
  }
  return latencyBucketUpperUs(h.buckets.length - 1);
}
