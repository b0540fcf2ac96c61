// Latency buckets (ublk/latency.ts): where a value lands, what a bucket's
// upper bound is, and the percentiles `ublk stats` shows from them.
import t from 'tap';
import fc from 'fast-check';
import {
  HIST_BUCKET0,
  HIST_LEN,
  LAT_WRITE,
  LATENCY_BUCKETS,
  latencyBucket,
  latencyBucketUpperUs,
  latencyCount,
  latencyPercentile,
  mergeLatency,
  newQueueLatency,
  readQueueLatency,
  recordLatency,
} from '../../ublk/latency.js';

t.test('1 bucket edges: [0, 1 µs), then 4 equal parts of each power of two, then 2^32 µs and more', async (t) => {
  const cases: [number, number][] = [
    [0, 0],
    [0.999, 0],
    [-3, 0], // a clock that stepped back
    [NaN, 0],
    [1, 1],
    [1.2499, 1],
    [1.25, 2],
    [1.5, 3],
    [1.75, 4],
    [1.9999, 4],
    [2, 5],
    [2.5, 6],
    [3.5, 8],
    [4, 9],
    [1000, 40], // 512 µs + 3 quarters
    [1024, 41],
    [2 ** 32 - 1, 128],
    [2 ** 32, 129],
    [1e12, 129],
  ];
  for (const [us, b] of cases) t.equal(latencyBucket(us), b, `${us} µs is in bucket ${b}`);
  t.equal(LATENCY_BUCKETS, 130);
  t.same([0, 1, 2, 4, 5, 40, 128].map(latencyBucketUpperUs), [1, 1.25, 1.5, 2, 2.5, 1024, 2 ** 32]);
  t.equal(latencyBucketUpperUs(129), Infinity);
  for (let b = 0; b < 129; b++) {
    const upper = latencyBucketUpperUs(b);
    if (latencyBucket(upper) !== b + 1 || latencyBucket(upper * (1 - 2 ** -40)) !== b) t.fail(`bucket ${b} does not end at ${upper}`);
  }
});

t.test('2 a bucket upper bound is at most 25% above any value in the bucket', async (t) => {
  fc.assert(
    fc.property(fc.double({ min: 1, max: 2 ** 32, maxExcluded: true, noNaN: true }), (us) => {
      const upper = latencyBucketUpperUs(latencyBucket(us));
      return upper > us && upper <= us * 1.25;
    }),
  );
  t.pass('checked');
});

t.test('3 percentiles of a known distribution are the upper bounds of their buckets', async (t) => {
  const h = newQueueLatency();
  // 900 requests of 100 µs, 90 of 1 ms, 9 of 10 ms, 1 of 1 s.
  for (let i = 0; i < 900; i++) recordLatency(h, LAT_WRITE, 100);
  for (let i = 0; i < 90; i++) recordLatency(h, LAT_WRITE, 1000);
  for (let i = 0; i < 9; i++) recordLatency(h, LAT_WRITE, 10_000);
  recordLatency(h, LAT_WRITE, 1e6);
  const w = readQueueLatency(h).write;
  t.equal(latencyCount(w), 1000);
  t.equal(w.sumUs, 900 * 100 + 90 * 1000 + 9 * 10_000 + 1e6);
  t.equal(latencyPercentile(w, 50), 112, '100 µs is in [96, 112)');
  t.equal(latencyPercentile(w, 90), 112, 'the 900th request is still 100 µs');
  t.equal(latencyPercentile(w, 99), 1024, '1 ms is in [896, 1024)');
  t.equal(latencyPercentile(w, 99.9), 10240, '10 ms is in [8192, 10240)');
  t.equal(latencyPercentile(w, 100), 1048576, '1 s is in [917504, 1048576)');
  t.equal(latencyPercentile(readQueueLatency(h).read, 50), null, 'no reads: no percentile');
  t.same(readQueueLatency(h).read, { sumUs: 0, buckets: [] }, 'empty buckets are left out');
  t.equal(w.buckets.length, latencyBucket(1e6) + 1, 'up to the last bucket in use');
  t.equal(h.length, 4 * HIST_LEN);
  t.equal(h[LAT_WRITE * HIST_LEN + HIST_BUCKET0 + latencyBucket(100)], 900);

  const slow = newQueueLatency();
  recordLatency(slow, LAT_WRITE, 2 ** 40);
  t.equal(latencyPercentile(readQueueLatency(slow).write, 50), Infinity, 'beyond 2^32 µs: no upper bound');
});

t.test('4 merge adds bucket by bucket, histograms of any length', async (t) => {
  const m = mergeLatency([
    { sumUs: 10, buckets: [1, 0, 2] },
    { sumUs: 5, buckets: [0, 3] },
    { sumUs: 0, buckets: [] },
  ]);
  t.same(m, { sumUs: 15, buckets: [1, 3, 2] });
  t.equal(latencyCount(m), 6);
  t.same(mergeLatency([]), { sumUs: 0, buckets: [] });
});
