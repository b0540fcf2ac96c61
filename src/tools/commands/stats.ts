/** `ublk stats -n ID [--json] [--watch S]`: the daemon's live counters, per queue and in total. */
import { connect } from 'node:net';
import { QUEUE_STAT_NAMES } from '../../ublk/queue-stats.js';
import { readState, socketPath } from '../../ublk/state.js';
import { CliError, requireRoot } from '../cli-util.js';
import { table } from '../format.js';

type QueueStats = Record<string, number>;

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

function totals(queues: QueueStats[]): QueueStats {
  const t: QueueStats = {};
  for (const name of QUEUE_STAT_NAMES) t[name] = queues.reduce((s, q) => s + (q[name] ?? 0), 0);
  return t;
}

async function snapshot(id: number): Promise<{ queues: QueueStats[]; total: QueueStats }> {
  const r = await requestDaemon(id, { cmd: 'stats' });
  if (r.ok !== true) throw new CliError(`device ${id}: ${String(r.error)}`);
  const queues = r.stats as QueueStats[];
  return { queues, total: totals(queues) };
}

function print(s: { queues: QueueStats[]; total: QueueStats }): void {
  const names = QUEUE_STAT_NAMES.filter((n) => n !== 'pollNs' || s.total.pollNs > 0);
  const rows = [['', ...s.queues.map((_, i) => `q${i}`), 'total']];
  for (const n of names) rows.push([n, ...s.queues.map((q) => String(q[n] ?? 0)), String(s.total[n])]);
  process.stdout.write(table(rows) + '\n');
}

export async function stats(o: { number: number; json?: boolean; watch?: number }): Promise<number> {
  requireRoot();
  if (readState(o.number) === null) throw new CliError(`device ${o.number} is not served by ublk-ts`);
  for (;;) {
    const s = await snapshot(o.number);
    if (o.json) process.stdout.write(JSON.stringify(s) + '\n');
    else print(s);
    if (!o.watch) return 0;
    await new Promise((r) => setTimeout(r, o.watch! * 1000));
    if (!o.json) process.stdout.write('\n');
  }
}
