/** `ublk stats -n ID [--json] [--watch S]`: the daemon's live counters, per queue and in total. */
import { connect } from 'node:net';
import { REAP_PERCENTILES } from '../../aio/stats.js';
import { QUEUE_STAT_NAMES } from '../../ublk/queue-stats.js';
import { readState, socketPath } from '../state.js';
import { CliError, requireRoot } from '../cli-util.js';
import { table } from '../format.js';

type QueueStats = Record<string, number>;

/**
 * What `ublk stats --json` prints: the dispatcher's counters per queue and
 * in total, and the target's own part as the daemon gave it (loop:
 * `{aio: [per-queue AIO snapshot or null], reapPercentiles: {"1": n, …}}`;
 * null for targets without statistics).
 */
export interface StatsSnapshot {
  queues: QueueStats[];
  total: QueueStats;
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

/** The sum over queues of every counter (pollNs: the largest, it is a setting, not a count). */
function totals(queues: QueueStats[], names: readonly string[]): QueueStats {
  const t: QueueStats = {};
  for (const name of names) {
    t[name] = name === 'pollNs' ? Math.max(0, ...queues.map((q) => q[name] ?? 0)) : queues.reduce((s, q) => s + (q[name] ?? 0), 0);
  }
  return t;
}

/** Builds the snapshot from the daemon's reply to {"cmd":"stats"}. */
export function snapshotFromReply(r: Record<string, unknown>): StatsSnapshot {
  const queues = r.stats as QueueStats[];
  const target = r.target !== null && typeof r.target === 'object' ? (r.target as Record<string, unknown>) : null;
  return { queues, total: totals(queues, QUEUE_STAT_NAMES), target };
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

/** The text form: the queue table, then (loop, qcow2: AIO) the AIO table and the completions per reap, then (qcow2) its metadata counters. */
export function formatStats(s: StatsSnapshot): string {
  const names = QUEUE_STAT_NAMES.filter((n) => n !== 'pollNs' || s.total.pollNs > 0);
  const rows = [['', ...s.queues.map((_, i) => `q${i}`), 'total']];
  for (const n of names) rows.push([n, ...s.queues.map((q) => String(q[n] ?? 0)), String(s.total[n])]);
  let out = table(rows) + '\n';

  const aio = Array.isArray(s.target?.aio) ? (s.target.aio as (QueueStats | null)[]) : [];
  if (aio.some((q) => q !== null && typeof q === 'object')) {
    const present = aio.filter((q): q is QueueStats => q !== null && typeof q === 'object');
    const total = totals(present, AIO_ROWS);
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
  return out;
}

export async function stats(o: { number: number; json?: boolean; watch?: number }): Promise<number> {
  requireRoot();
  if (readState(o.number) === null) throw new CliError(`device ${o.number} is not served by ublk-ts`);
  for (;;) {
    const s = await snapshot(o.number);
    if (o.json) process.stdout.write(JSON.stringify(s) + '\n');
    else process.stdout.write(formatStats(s));
    if (!o.watch) return 0;
    await new Promise((r) => setTimeout(r, o.watch! * 1000));
    if (!o.json) process.stdout.write('\n');
  }
}
