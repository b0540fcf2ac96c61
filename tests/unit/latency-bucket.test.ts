// latencyBucket reads the bucket off the bits of the double (ublk/latency.ts):
// it must land every value where the arithmetic of the bucket definition does.
import t from 'tap';
import fc from 'fast-check';
import { LATENCY_BUCKETS, latencyBucket } from '../../ublk/latency.js';

/** The definition, as latencyBucket computed it before: floor(log2) by clz32, the quarter by an exact divide. */
function reference(us: number): number {
  if (!(us >= 1)) return 0;
  if (us >= 2 ** 32) return LATENCY_BUCKETS - 1;
  const e = 31 - Math.clz32(us >>> 0);
  return 1 + e * 4 + Math.floor((us / 2 ** e - 1) * 4);
}

const view = new DataView(new ArrayBuffer(8));
/** The double next to `x` (x > 0), `dir` = 1 above, -1 below. */
function next(x: number, dir: 1 | -1): number {
  view.setFloat64(0, x);
  view.setBigUint64(0, view.getBigUint64(0) + BigInt(dir));
  return view.getFloat64(0);
}

t.test('1 powers of two, quarter boundaries and the doubles either side of them', async (t) => {
  const values: number[] = [];
  for (let e = -3; e <= 33; e++) {
    for (let q = 0; q < 4; q++) {
      const edge = 2 ** e * (1 + q / 4);
      values.push(edge, next(edge, 1), next(edge, -1));
    }
  }
  let wrong = values.filter((us) => latencyBucket(us) !== reference(us));
  t.same(wrong, [], `${values.length} edges`);

  const fractions = [1.3, 2.6, 3.9, 1.0000001, 1.2499999, 1.7500001, 2.4999, 3.75, 3.7499, 7.99, 100.5, 1000.25, 65535.999];
  wrong = fractions.filter((us) => latencyBucket(us) !== reference(us));
  t.same(wrong, [], 'fractions of a microsecond');
  t.same([1.3, 2.6, 3.9].map(latencyBucket), [2, 6, 8], '1.3 in [1.25, 1.5), 2.6 in [2.5, 3), 3.9 in [3.5, 4)');

  const odd = [0, -0, -1, 0.5, NaN, Infinity, -Infinity, 2 ** 32, 2 ** 53, Number.MAX_VALUE, Number.MIN_VALUE];
  t.same(odd.map(latencyBucket), odd.map(reference), 'below 1 µs, NaN, the infinities, 2^32 µs and more');
});

t.test('2 every 1/8 µs to 2^16 and random doubles to 2^33 land as the definition says', async (t) => {
  let wrong = 0;
  for (let us = 0; us < 2 ** 16; us += 0.125) if (latencyBucket(us) !== reference(us)) wrong++;
  t.equal(wrong, 0, 'every 1/8 µs below 2^16 µs');
  fc.assert(
    fc.property(fc.double({ min: 0, max: 2 ** 33, noNaN: true }), (us) => latencyBucket(us) === reference(us)),
    { numRuns: 100_000 },
  );
  t.pass('100000 random doubles in [0, 2^33]');
});
