// `ublk stats`: the text form shows the request latency by op, the loop
// target's AIO counters and the completions-per-reap percentiles next to
// the dispatcher's counters.
import t from 'tap';
import { REAP_PERCENTILES } from '../../aio/stats.js';
import { QUEUE_STAT_NAMES } from '../../ublk/queue-stats.js';
import { formatStats, snapshotFromReply } from '../../tools/commands/stats.js';
import { newQueueLatency, readQueueLatency } from '../../ublk/latency.js';
import { REPLY } from '../lib/stats-reply.js';

const queue = (reads: number, pollNs = 0) => Object.fromEntries(QUEUE_STAT_NAMES.map((n) => [n, n === 'reads' ? reads : n === 'pollNs' ? pollNs : 0]));
const aio = (ios: number, ps: number[]) => ({
  ios,
  bytes: ios * 4096,
  errors: 0,
  submits: ios / 2,
  submitted: ios,
  eagains: 1,
  partialSubmits: 0,
  shortIos: 0,
  reaps: ios / 4,
  emptyReaps: 3,
  getevents: 0,
  pollHits: 0,
  pollMisses: 0,
  pollNs: 0,
  reapPercentiles: ps,
});

t.test('1 the JSON snapshot keeps the target part and totals the queues', async (t) => {
  const s = snapshotFromReply({ ok: true, stats: [queue(10, 2000), queue(30, 5000)], target: { aio: [null], reapPercentiles: {} } });
  t.equal(s.total.reads, 40);
  t.equal(s.total.pollNs, 5000, 'pollNs is a setting: the largest, not the sum');
  t.same(s.target, { aio: [null], reapPercentiles: {} });
  t.equal(snapshotFromReply({ ok: true, stats: [queue(1)], target: null }).target, null, 'null target stays null');
  t.equal(snapshotFromReply({ ok: true, stats: [queue(1)] }).target, null, 'an older daemon without target: null');
});

t.test('2 text: AIO table per queue and total, then completions per reap', async (t) => {
  const ps0 = [1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 31];
  const ps1 = [1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 32];
  const merged = Object.fromEntries(REAP_PERCENTILES.map((p, i) => [String(p), ps1[i]]));
  const out = formatStats(snapshotFromReply({ ok: true, stats: [queue(8), queue(12)], target: { aio: [aio(8, ps0), aio(12, ps1)], reapPercentiles: merged } }));
  t.match(out, /^reads +8 +12 +20$/m, 'dispatcher counters as before');
  t.match(out, /^aio +q0 +q1 +total$/m);
  t.match(out, /^ios +8 +12 +20$/m);
  t.match(out, /^submits +4 +6 +10$/m);
  t.match(out, /^eagains +1 +1 +2$/m);
  t.notMatch(out, /^pollNs/m, 'no polling: no poll time row');
  t.match(out, /^completions per reap +p1 +p10 +p20 .* p90 +p99\.99$/m);
  t.match(out, /^q0 +1 +1 +2 +3 +4 +5 +6 +7 +8 +9 +31$/m);
  t.match(out, /^total +1 +2 +2 +3 +4 +5 +6 +7 +8 +9 +32$/m);
});

t.test('3 text: targets without AIO statistics print the queue table only', async (t) => {
  for (const target of [null, { aio: [null], reapPercentiles: {} }]) {
    const out = formatStats(snapshotFromReply({ ok: true, stats: [queue(5)], target }));
    t.match(out, /^reads +5 +5$/m);
    t.notMatch(out, /aio|completions per reap/);
  }
});

t.test('4 text: the latency table over all queues, percentiles as bucket upper bounds with units', async (t) => {
  const out = formatStats(snapshotFromReply(REPLY));
  t.match(out, /^latency +count +p50 +p99 +p99\.9$/m);
  t.match(out, /^read +1200 +96µs +1\.02ms +5\.12ms$/m, 'both queues: 1100 reads of 80-85 µs, 90 of 900 µs, 10 of 5 ms');
  t.match(out, /^write +600 +160µs +2\.05ms +2\.05ms$/m);
  t.match(out, /^flush +2 +3\.07ms +3\.07ms +3\.07ms$/m);
  t.match(out, /^discard +1 +41ms +41ms +41ms$/m, 'the write-zeroes request is timed as a discard');
  const idle = formatStats(snapshotFromReply({ ...REPLY, latency: [readQueueLatency(newQueueLatency())] }));
  t.match(idle, /^read +0 +- +- +-$/m, 'no requests: no percentiles');
  t.notMatch(formatStats(snapshotFromReply({ ...REPLY, latency: undefined })), /^latency/m, 'a daemon without latency: no table');
});

t.test('5 JSON: count, sum and percentiles per op next to the counters', async (t) => {
  const s = JSON.parse(JSON.stringify(snapshotFromReply(REPLY)));
  t.equal(s.total.reads, 1200);
  t.match(s.latency.read, { count: 1200, sumUs: 900 * 80 + 200 * 85 + 90 * 900 + 10 * 5000, p50Us: 96, p99Us: 1024, p999Us: 5120 });
  t.match(s.latency.flush, { count: 2, sumUs: 6000, p50Us: 3072 });
  t.same(Object.keys(s.latency), ['read', 'write', 'flush', 'discard']);
  t.equal(snapshotFromReply({ ...REPLY, latency: undefined }).latency, null);
});

t.test('nbd: one column per connection with its state, bytes and reconnects', async (t) => {
  const s = snapshotFromReply({
    ok: true,
    stats: [queue(1), queue(2)],
    target: { nbd: [{ state: 'up', sentBytes: 4096, receivedBytes: 8192, reconnects: 0 }, { state: 'reconnecting', sentBytes: 0, receivedBytes: 16, reconnects: 3 }] },
  });
  const text = formatStats(s);
  t.match(text, /nbd\s+q0\s+q1\n/);
  t.match(text, /state\s+up\s+reconnecting\n/);
  t.match(text, /sentBytes\s+4096\s+0\n/);
  t.match(text, /receivedBytes\s+8192\s+16\n/);
  t.match(text, /reconnects\s+0\s+3\n/);
});
