/** `ublk stats -n ID [--json | --prometheus] [--watch S]`: the daemon's live counters, per queue and in total. */
import { connect } from 'node:net';
import { REAP_PERCENTILES } from '../../aio/stats.js';
import { LATENCY_OPS, type LatencyHistogram, type LatencyOp, latencyCount, latencyPercentile, mergeLatency } from '../../ublk/latency.js';
import { QUEUE_STAT_NAMES, sumQueueStats } from '../../ublk/queue-stats.js';
import { socketPath } from '../state.js';
import { CliError, requireRootOrOwnerOf } from '../cli-util.js';
import { formatLatency, table } from '../format.js';
import { formatPrometheus } from '../prometheus.js';

type QueueStats = Record<string, number>;

/**
 * One op's request latency over all queues. Percentiles are bucket upper
 * bounds (latency.ts: at most 25% high); null without requests, and in
 * JSON also beyond the last bucket (Infinity). `buckets`: the merged
 * histogram, bucket i ending at latencyBucketUpperUs(i).
 */
export interface LatencySummary extends LatencyHistogram {
  count: number;
  p50Us: number | null;
  p99Us: number | null;
  p999Us: number | null;
}

/**
 * What `ublk stats --json` prints: the dispatcher's counters per queue and
 * in total, the request latency by op (null from a daemon too old to time
 * requests), and the target's own part as the daemon gave it (loop:
 * `{aio: [per-queue AIO snapshot or null], reapPercentiles: {"1": n, …}}`;
 * null for targets without statistics).
 */
export interface StatsSnapshot {
  queues: QueueStats[];
  total: QueueStats;
  latency: Record<LatencyOp, LatencySummary> | null;
  target: Record<string, unknown> | null;
}

export function requestDaemon(id: number, request: object): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const conn = connect(socketPath(id));
    let input = '';
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(JSON.stringify(request) + '\n'));
    conn.on('data', (c: string) => (input += c));
    conn.on('end', () => {
      try {
        resolve(JSON.parse(input) as Record<string, unknown>);
      } catch {
        reject(new CliError(`device ${id}: the daemon gave no answer`));
      }
    });
    conn.on('error', () => reject(new CliError(`device ${id} has no running ublk-ts daemon`)));
  });
}

export function summarizeLatency(h: LatencyHistogram): LatencySummary {
  return {
    count: latencyCount(h),
    sumUs: h.sumUs,
    p50Us: latencyPercentile(h, 50),
    p99Us: latencyPercentile(h, 99),
    p999Us: latencyPercentile(h, 99.9),
    buckets: h.buckets,
  };
}

/** Builds the snapshot from the daemon's reply to {"cmd":"stats"}. */
export function snapshotFromReply(r: Record<string, unknown>): StatsSnapshot {
  const queues = r.stats as QueueStats[];
  const perQueue = Array.isArray(r.latency) ? (r.latency as Record<LatencyOp, LatencyHistogram>[]) : null;
  const latency =
    perQueue === null
      ? null
      : (Object.fromEntries(LATENCY_OPS.map((op) => [op, summarizeLatency(mergeLatency(perQueue.map((q) => q[op])))])) as Record<LatencyOp, LatencySummary>);
  const target = r.target !== null && typeof r.target === 'object' ? (r.target as Record<string, unknown>) : null;
  return { queues, total: sumQueueStats(queues, QUEUE_STAT_NAMES), latency, target };
}

async function snapshot(id: number): Promise<StatsSnapshot> {
  const r = await requestDaemon(id, { cmd: 'stats' });
  if (r.ok !== true) throw new CliError(`device ${id}: ${String(r.error)}`);
  return snapshotFromReply(r);
}

/** AIO counters shown in the text output, in this order (see aio/stats.ts). */
const AIO_ROWS = [
  'ios',
  'bytes',
  'errors',
  'submits',
  'submitted',
  'eagains',
  'partialSubmits',
  'shortIos',
  'reaps',
  'emptyReaps',
  'getevents',
  'pollHits',
  'pollMisses',
  'pollNs',
] as const;

const num = (v: unknown): string => (typeof v === 'number' ? String(v) : '-');

/** The text form: the queue table, the latency by op over all queues, then (loop, qcow2: AIO) the AIO table and the completions per reap, then (qcow2) its metadata counters, (nbd) each connection, (rbd) each queue's librbd requests. */
export function formatStats(s: StatsSnapshot): string {
  const names = QUEUE_STAT_NAMES.filter((n) => n !== 'pollNs' || s.total.pollNs > 0);
  const rows = [['', ...s.queues.map((_, i) => `q${i}`), 'total']];
  for (const n of names) rows.push([n, ...s.queues.map((q) => String(q[n] ?? 0)), String(s.total[n])]);
  let out = table(rows) + '\n';

  if (s.latency !== null) {
    const latRows = [['latency', 'count', 'p50', 'p99', 'p99.9']];
    for (const op of LATENCY_OPS) {
      const l = s.latency[op];
      latRows.push(l.count === 0 ? [op, '0', '-', '-', '-'] : [op, String(l.count), formatLatency(l.p50Us), formatLatency(l.p99Us), formatLatency(l.p999Us)]);
    }
    out += '\n' + table(latRows) + '\n';
  }

  const aio = Array.isArray(s.target?.aio) ? (s.target.aio as (QueueStats | null)[]) : [];
  if (aio.some((q) => q !== null && typeof q === 'object')) {
    const present = aio.filter((q): q is QueueStats => q !== null && typeof q === 'object');
    const total = sumQueueStats(present, AIO_ROWS);
    const aioRows = [['aio', ...aio.map((_, i) => `q${i}`), 'total']];
    for (const n of AIO_ROWS) {
      if (n === 'pollNs' && total.pollNs === 0 && total.pollHits === 0 && total.pollMisses === 0) continue;
      aioRows.push([n, ...aio.map((q) => (q === null ? '-' : num(q[n]))), String(total[n])]);
    }
    out += '\n' + table(aioRows) + '\n';

    const merged = s.target?.reapPercentiles as Record<string, number> | undefined;
    const pctRows = [['completions per reap', ...REAP_PERCENTILES.map((p) => `p${p}`)]];
    aio.forEach((q, i) => {
      if (q === null) return;
      const ps = Array.isArray(q.reapPercentiles) ? (q.reapPercentiles as unknown as number[]) : [];
      pctRows.push([`q${i}`, ...REAP_PERCENTILES.map((_, j) => num(ps[j]))]);
    });
    if (merged) pctRows.push(['total', ...REAP_PERCENTILES.map((p) => num(merged[String(p)]))]);
    out += '\n' + table(pctRows) + '\n';
  }
  const qcow2 = s.target?.qcow2;
  if (qcow2 !== null && typeof qcow2 === 'object') {
    out += '\n' + table([['qcow2', ''], ...Object.entries(qcow2 as Record<string, number>).map(([k, v]) => [k, num(v)])]) + '\n';
  }
  // nbd: each queue's connection; rbd: each queue's requests to librbd.
  out += perQueueTable(s.target?.nbd, 'nbd', ['state', 'sentBytes', 'receivedBytes', 'reconnects']);
  out += perQueueTable(s.target?.rbd, 'rbd', ['ios', 'errors', 'avgLatencyUs', 'maxLatencyUs']);
  return out;
}

/** A target's per-queue counters (one object per queue, null where none) as a table with a column per queue. */
function perQueueTable(v: unknown, name: string, keys: string[]): string {
  const queues = Array.isArray(v) ? (v as (Record<string, unknown> | null)[]) : [];
  if (queues.length === 0) return '';
  const rows = [[name, ...queues.map((_, i) => `q${i}`)]];
  for (const k of keys) rows.push([k, ...queues.map((c) => (c === null ? '-' : String(c[k] ?? '-')))]);
  return '\n' + table(rows) + '\n';
}

/** Clear screen, cursor home: each --watch print replaces the last on a terminal. */
const REDRAW = '\x1b[H\x1b[2J';

export async function stats(o: { number: number; json?: boolean; prometheus?: boolean; watch?: number }): Promise<number> {
  if (o.json && o.prometheus) throw new CliError('--json and --prometheus cannot be used together');
  if (requireRootOrOwnerOf(o.number) === null) throw new CliError(`device ${o.number} is not served by ublk-ts`);
  const redraw = o.watch !== undefined && process.stdout.isTTY === true;
  for (;;) {
    const s = await snapshot(o.number);
    const out = o.json ? JSON.stringify(s) + '\n' : o.prometheus ? formatPrometheus(o.number, s) : formatStats(s);
    process.stdout.write(redraw ? REDRAW + out : out);
    if (!o.watch) return 0;
    await new Promise((r) => setTimeout(r, o.watch! * 1000));
    // Into a file or pipe: one print after another (JSON: one per line).
    if (!o.json && !redraw) process.stdout.write('\n');
  }
}
