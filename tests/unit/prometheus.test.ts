// `ublk stats --prometheus`: what a Prometheus parser reads back from the
// text is what the snapshot holds — counters per queue, the in-flight
// gauge, and the latency histograms (cumulative, _count = +Inf bucket).
import t from 'tap';
import parse, { type PrometheusFamily } from 'parse-prometheus-text-format';
import { LATENCY_OPS } from '../../ublk/latency.js';
import { snapshotFromReply } from '../../tools/commands/stats.js';
import { formatPrometheus } from '../../tools/prometheus.js';
import { REPLY } from '../lib/stats-reply.js';

const DURATION = 'ublk_request_duration_seconds';
const snap = snapshotFromReply(REPLY);
const text = formatPrometheus(7, snap);
const families = parse(text);
function family(name: string): PrometheusFamily {
  const f = families.find((f) => f.name === name);
  if (f === undefined) throw new Error(`no ${name} in the output`);
  return f;
}

/** The family's samples as "label=value,… → number", for comparing against the snapshot. */
function samples(name: string): Record<string, number> {
  return Object.fromEntries(
    family(name).metrics.map((m) => [
      Object.entries(m.labels ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
      Number(m.value),
    ]),
  );
}

/**
 * One op's histogram as the parser reads it. parse-prometheus-text-format
 * 1.1.1 keeps a histogram's _count and _sum only without labels other than
 * `le`, and mixes the buckets of different label sets
 * (yunyu/parse-prometheus-text-format#13): so each op's lines are parsed
 * alone, with `le` as their only label.
 */
function histogram(op: string) {
  const lines = text
    .split('\n')
    .filter((l) => l.startsWith(`# HELP ${DURATION} `) || l.startsWith(`# TYPE ${DURATION} `) || (l.startsWith(`${DURATION}_`) && l.includes(`op="${op}"`)))
    .map((l) => l.replace(/\{[^}]*\}/, (labels) => {
      const le = /le="[^"]*"/.exec(labels);
      return le === null ? '' : `{${le[0]}}`;
    }));
  const [f] = parse(lines.join('\n') + '\n');
  const m = f.metrics[0];
  return { type: f.type, buckets: Object.entries(m.buckets ?? {}).map(([le, n]) => [le === '+Inf' ? Infinity : Number(le), Number(n)] as const), count: Number(m.count), sum: Number(m.sum) };
}

t.test('1 counters and the in-flight gauge: one sample per queue, the snapshot numbers', async (t) => {
  for (const f of families) {
    t.ok(f.help.length > 0, `${f.name} has HELP`);
    if (f.name.endsWith('_total')) t.equal(f.type, 'COUNTER', `${f.name} is a counter`);
  }
  t.same(samples('ublk_requests_total'), {
    'device=7,queue=0,op=read': 1000,
    'device=7,queue=1,op=read': 200,
    'device=7,queue=0,op=write': 500,
    'device=7,queue=1,op=write': 100,
    'device=7,queue=0,op=flush': 2,
    'device=7,queue=1,op=flush': 0,
    'device=7,queue=0,op=discard': 0,
    'device=7,queue=1,op=discard': 0,
    'device=7,queue=0,op=write_zeroes': 0,
    'device=7,queue=1,op=write_zeroes': 1,
    'device=7,queue=0,op=other': 0,
    'device=7,queue=1,op=other': 0,
  });
  const bytes = samples('ublk_bytes_total');
  t.equal(bytes['device=7,queue=0,op=read'], snap.queues[0].readBytes);
  t.equal(bytes['device=7,queue=1,op=write'], snap.queues[1].writeBytes);
  t.equal(bytes['device=7,queue=1,op=write_zeroes'], snap.queues[1].writeZeroesBytes);
  t.same(samples('ublk_errors_total'), { 'device=7,queue=0': 1, 'device=7,queue=1': 0 });
  t.equal(family('ublk_in_flight_requests').type, 'GAUGE');
  t.same(samples('ublk_in_flight_requests'), { 'device=7,queue=0': 3, 'device=7,queue=1': 1 });
  t.same(samples('ublk_queue_waits_total'), { 'device=7,queue=0': 650, 'device=7,queue=1': 0 });
  t.same(samples('ublk_poll_time_seconds'), { 'device=7,queue=0': 0, 'device=7,queue=1': 20e-6 }, 'ns become seconds');
});

t.test('2 latency: a histogram per op, cumulative buckets in seconds, _count = +Inf = the snapshot count', async (t) => {
  t.equal(family(DURATION).type, 'HISTOGRAM');
  for (const op of LATENCY_OPS) {
    const h = histogram(op);
    const want = snap.latency![op];
    t.equal(h.count, want.count, `${op}: _count`);
    t.same(h.buckets.at(-1), [Infinity, want.count], `${op}: +Inf bucket = _count`);
    t.equal(h.sum, want.sumUs / 1e6, `${op}: _sum in seconds`);
    t.equal(h.buckets.length, 34, `${op}: 1 µs … 2^32 µs and +Inf`);
    t.ok(h.buckets.every(([le, n], i) => i === 0 || (le > h.buckets[i - 1][0] && n >= h.buckets[i - 1][1])), `${op}: le and counts never go down`);
    t.match(text, new RegExp(`^${DURATION}_count\\{device="7",op="${op}"\\} ${want.count}$`, 'm'), `${op}: device and op labels`);
  }
  const read = new Map(histogram('read').buckets);
  // 1100 reads of 80-85 µs, 90 of 900 µs, 10 of 5 ms
  t.same([read.get(0.000064), read.get(0.000128), read.get(0.000512), read.get(0.001024), read.get(0.008192)], [0, 1100, 1100, 1190, 1200]);
  t.equal(snap.latency!.read.count, 1200);
});

t.test('3 a daemon without latency histograms: the counters only', async (t) => {
  const out = formatPrometheus(0, snapshotFromReply({ ...REPLY, latency: undefined }));
  t.match(out, /^ublk_requests_total\{device="0",queue="0",op="read"\} 1000$/m);
  t.notMatch(out, DURATION);
});
