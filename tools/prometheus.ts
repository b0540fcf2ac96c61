/**
 * `ublk stats --prometheus`: a snapshot in the Prometheus text exposition
 * format 0.0.4, as node_exporter's textfile collector reads it. Names follow
 * node_exporter's: counters end in `_total`, durations are in seconds.
 */
import { LATENCY_OPS, latencyBucketUpperUs } from '../ublk/latency.js';
import type { QueueStatName } from '../ublk/queue-stats.js';
import type { StatsSnapshot } from './commands/stats.js';

interface Family {
  name: string;
  type: 'counter' | 'gauge';
  help: string;
}

const F = {
  requests: { name: 'ublk_requests_total', type: 'counter', help: 'Requests the queue received from ublk_drv, by op.' },
  bytes: { name: 'ublk_bytes_total', type: 'counter', help: 'Bytes the requests covered, by op.' },
  errors: { name: 'ublk_errors_total', type: 'counter', help: 'Requests completed with an error.' },
  shortIos: { name: 'ublk_short_ios_total', type: 'counter', help: 'Reads and writes completed with fewer bytes than asked (ublk_drv sends the rest again).' },
  inFlight: { name: 'ublk_in_flight_requests', type: 'gauge', help: 'Requests the target holds.' },
  enters: { name: 'ublk_queue_rounds_total', type: 'counter', help: 'Rounds of the queue loop (one io_uring_enter each).' },
  waits: { name: 'ublk_queue_waits_total', type: 'counter', help: 'Rounds that blocked in io_uring_enter for work.' },
  pollHits: { name: 'ublk_poll_hits_total', type: 'counter', help: 'Adaptive polls that found work.' },
  pollMisses: { name: 'ublk_poll_misses_total', type: 'counter', help: 'Adaptive polls that timed out.' },
  pollTime: { name: 'ublk_poll_time_seconds', type: 'gauge', help: "The adaptive poller's current poll time." },
} satisfies Record<string, Family>;

/**
 * Where each queue counter goes: its family, the op label if any, and the
 * divisor to its unit. A Record over every counter, so a new one cannot be left out.
 */
const QUEUE_METRICS: Record<QueueStatName, [Family, string | null, number]> = {
  reads: [F.requests, 'read', 1],
  writes: [F.requests, 'write', 1],
  flushes: [F.requests, 'flush', 1],
  discards: [F.requests, 'discard', 1],
  writeZeroes: [F.requests, 'write_zeroes', 1],
  otherOps: [F.requests, 'other', 1],
  readBytes: [F.bytes, 'read', 1],
  writeBytes: [F.bytes, 'write', 1],
  discardBytes: [F.bytes, 'discard', 1],
  writeZeroesBytes: [F.bytes, 'write_zeroes', 1],
  errors: [F.errors, null, 1],
  shortIos: [F.shortIos, null, 1],
  inFlight: [F.inFlight, null, 1],
  enters: [F.enters, null, 1],
  waits: [F.waits, null, 1],
  pollHits: [F.pollHits, null, 1],
  pollMisses: [F.pollMisses, null, 1],
  pollNs: [F.pollTime, null, 1e9],
};

const DURATION = 'ublk_request_duration_seconds';

/** Powers of two from 1 µs to 2^32 µs: every 4th bucket boundary (latency.ts), to keep the output short. */
const LE_EVERY = 4;

function header(name: string, type: string, help: string): string {
  return `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
}

/** The exposition text for device `id`: per-queue counters, and the latency by op over all queues as histograms. */
export function formatPrometheus(id: number, s: StatsSnapshot): string {
  const device = `device="${id}"`;
  let out = '';
  for (const f of Object.values(F)) {
    out += header(f.name, f.type, f.help);
    for (const [stat, [family, op, divisor]] of Object.entries(QUEUE_METRICS)) {
      if (family !== f) continue;
      s.queues.forEach((q, i) => {
        const labels = op === null ? `${device},queue="${i}"` : `${device},queue="${i}",op="${op}"`;
        out += `${f.name}{${labels}} ${(q[stat] ?? 0) / divisor}\n`;
      });
    }
  }
  if (s.latency === null) return out;
  // Our buckets hold [lower, upper), so a le bucket may miss requests of
  // exactly `le`: a measure-zero set for a double clock difference.
  out += header(DURATION, 'histogram', 'Time from a request reaching its queue to its completion, by op (write_zeroes counts as discard).');
  for (const op of LATENCY_OPS) {
    const l = s.latency[op];
    const labels = `${device},op="${op}"`;
    let below = 0;
    let b = 0;
    for (let edge = 0; latencyBucketUpperUs(edge) < Infinity; edge += LE_EVERY) {
      for (; b <= edge; b++) below += l.buckets[b] ?? 0;
      out += `${DURATION}_bucket{${labels},le="${latencyBucketUpperUs(edge) / 1e6}"} ${below}\n`;
    }
    out += `${DURATION}_bucket{${labels},le="+Inf"} ${l.count}\n`;
    out += `${DURATION}_sum{${labels}} ${l.sumUs / 1e6}\n`;
    out += `${DURATION}_count{${labels}} ${l.count}\n`;
  }
  return out;
}
