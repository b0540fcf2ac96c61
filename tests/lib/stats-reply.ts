/**
 * A daemon's reply to {"cmd":"stats"} for two queues, with latencies
 * recorded the way the queues record them (ublk/latency.ts), for the tests
 * of `ublk stats` and its Prometheus form.
 */
import { LAT_DISCARD, LAT_FLUSH, LAT_READ, LAT_WRITE, newQueueLatency, readQueueLatency, recordLatency } from '../../ublk/latency.js';
import { QUEUE_STAT_NAMES, type QueueStatName } from '../../ublk/queue-stats.js';

/** [op class, µs, how many] */
type Timed = [number, number, number];

function queue(counters: Partial<Record<QueueStatName, number>>, timed: Timed[]) {
  const h = newQueueLatency();
  for (const [op, us, n] of timed) for (let i = 0; i < n; i++) recordLatency(h, op, us);
  return { stats: Object.fromEntries(QUEUE_STAT_NAMES.map((n) => [n, counters[n] ?? 0])), latency: readQueueLatency(h) };
}

export const Q0 = queue({ reads: 1000, writes: 500, flushes: 2, readBytes: 1000 * 4096, writeBytes: 500 * 65536, errors: 1, inFlight: 3, enters: 700, waits: 650 }, [
  [LAT_READ, 80, 900],
  [LAT_READ, 900, 90],
  [LAT_READ, 5000, 10],
  [LAT_WRITE, 150, 500],
  [LAT_FLUSH, 3000, 2],
]);
export const Q1 = queue({ reads: 200, writes: 100, writeZeroes: 1, readBytes: 200 * 4096, writeBytes: 100 * 65536, writeZeroesBytes: 1 << 20, inFlight: 1, pollNs: 20_000 }, [
  [LAT_READ, 85, 200],
  [LAT_WRITE, 2000, 100],
  [LAT_DISCARD, 40_000, 1],
]);

export const REPLY = { ok: true, stats: [Q0.stats, Q1.stats], latency: [Q0.latency, Q1.latency], target: null };
