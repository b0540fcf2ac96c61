// Issue 19: `ublk stats` shows request latency, `--prometheus` prints text a
// Prometheus parser reads, with counters that match what fio did, and
// `--watch` redraws in place on a terminal.
import t from 'tap';
import parse from 'parse-prometheus-text-format';
import { BIN, addDevice, cleanup, fio, sh, ublk } from '../lib/ublk.js';

t.teardown(cleanup);

/** `ublk stats --prometheus`, parsed: "name{label=value,…}" → value, histograms left out. */
function scrape(id: number): Map<string, number> {
  const r = ublk('stats', '-n', String(id), '--prometheus');
  if (r.code !== 0) throw new Error(`ublk stats --prometheus: ${r.stderr}`);
  const out = new Map<string, number>();
  for (const f of parse(r.stdout)) {
    if (f.type === 'HISTOGRAM') continue;
    for (const m of f.metrics) {
      const labels = Object.entries(m.labels ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(',');
      out.set(`${f.name}{${labels}}`, Number(m.value));
    }
  }
  return out;
}

/** The histogram's _count for one op, from the text (the parser mixes labelled histograms: tests/unit/prometheus.test.ts). */
function durationCount(id: number, op: string): number {
  const r = ublk('stats', '-n', String(id), '--prometheus');
  const m = new RegExp(`^ublk_request_duration_seconds_count\\{device="${id}",op="${op}"\\} (\\d+)$`, 'm').exec(r.stdout);
  return m === null ? NaN : Number(m[1]);
}

t.test('the counters of --prometheus match the requests fio made; the latency table has them', async (t) => {
  const dev = addDevice('-t', 'mem', '-s', '256M', '-q', '2');
  const id = dev.id;
  const before = scrape(id);
  t.ok(before.has(`ublk_requests_total{device=${id},queue=0,op=read}`), 'per-queue request counters, by op');
  const readsBefore = durationCount(id, 'read');
  const writesBefore = durationCount(id, 'write');

  // QD1 sequential O_DIRECT: one request per fio IO, nothing to merge.
  const job = ['--name=m', '--bs=4k', '--iodepth=1', '--ioengine=psync', '--direct=1', '--size=16M', `--filename=${dev.blockDevice}`];
  const w = fio([...job, '--rw=write']);
  const r = fio([...job, '--rw=read']);
  t.same([w.errors, r.errors], [[0], [0]], 'fio wrote and read');
  const fioIos = (x: { output: string }, dir: 'read' | 'write') =>
    (JSON.parse(x.output.slice(x.output.indexOf('{'))) as { jobs: Record<string, { total_ios: number }>[] }).jobs[0][dir].total_ios;
  const wrote = fioIos(w, 'write');
  const read = fioIos(r, 'read');
  t.equal(wrote, 4096, 'fio made 4096 writes');

  const after = scrape(id);
  const sum = (m: Map<string, number>, op: string) => [0, 1].reduce((s, q) => s + (m.get(`ublk_requests_total{device=${id},queue=${q},op=${op}}`) ?? NaN), 0);
  t.equal(sum(after, 'write') - sum(before, 'write'), wrote, 'ublk_requests_total{op=write} grew by fio\'s writes');
  t.equal(sum(after, 'read') - sum(before, 'read'), read, 'ublk_requests_total{op=read} grew by fio\'s reads');
  const bytes = [0, 1].reduce((s, q) => s + (after.get(`ublk_bytes_total{device=${id},queue=${q},op=write}`) ?? NaN), 0);
  t.ok(bytes >= 16 * 2 ** 20, 'ublk_bytes_total{op=write} counts the 16 MiB');
  t.equal(durationCount(id, 'write') - writesBefore, wrote, 'the write latency histogram counts every write');
  t.equal(durationCount(id, 'read') - readsBefore, read, 'and the read one every read');

  const text = ublk('stats', '-n', String(id));
  t.match(text.stdout, /^latency +count +p50 +p99 +p99\.9$/m, 'ublk stats has a latency table');
  t.match(text.stdout, /^write +\d+ +[\d.]+(µs|ms) +[\d.]+(µs|ms) +[\d.]+(µs|ms|s)$/m, 'with percentiles for writes');
  const json = JSON.parse(ublk('stats', '-n', String(id), '--json').stdout) as { latency: Record<string, { count: number; p50Us: number; p99Us: number; p999Us: number }> };
  const l = json.latency.read;
  t.ok(l.count >= read && l.p50Us > 0 && l.p50Us <= l.p99Us && l.p99Us <= l.p999Us, `read percentiles in order: ${JSON.stringify(l)}`);
  t.equal(ublk('stats', '-n', String(id), '--json', '--prometheus').stderr, 'ublk: stats: --json and --prometheus cannot be used together\n');
});

t.test('--watch on a terminal redraws in place', async (t) => {
  const dev = addDevice('-t', 'null', '-s', '1G');
  // script(1) gives the command a terminal; timeout ends the watch after a few prints.
  const r = sh(`timeout 8 script -qec '${process.execPath} ${BIN} stats -n ${dev.id} --watch 1' /dev/null`);
  const redraws = r.stdout.split('\x1b[H\x1b[2J').length - 1;
  t.ok(redraws >= 2, `each print starts with clear-screen and home (${redraws} prints)`);
  const piped = sh(`timeout 5 ${process.execPath} ${BIN} stats -n ${dev.id} --watch 1 | cat`);
  t.notOk(piped.stdout.includes('\x1b['), 'into a pipe: no escape codes');
});
