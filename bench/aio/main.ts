/**
 * bench-aio: 4 KiB random O_DIRECT reads at QD32 and QD1, side by side:
 * this engine reaping the aio_ring in userspace, this engine with
 * io_getevents, and fio's libaio engine with and without userspace_reap,
 * each run in its own process, interleaved so drift in the (shared,
 * virtual) disk hits every variant alike; then one buffered pair on the
 * page-cache-hot file, which measures the software path alone (the last two
 * rows, their ratio against the buffered fio row). Prints the table, the
 * completions-per-reap percentiles, and last the QD32 ratio line.
 *
 *   node dist/bench/aio/main.js FILE [--seconds 10] [--rounds 2]
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { REAP_PERCENTILES } from '../../aio/stats.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    seconds: { type: 'string', default: '10' },
    ramp: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '2' },
    'poll-max-ns': { type: 'string', default: '1000000' },
    'max-submit': { type: 'string', default: '2' },
  },
});
const path = positionals[0];
if (path === undefined) throw new Error('usage: main FILE [--seconds N] [--rounds N]');
const seconds = values.seconds;
const ramp = values.ramp;
const rounds = Number(values.rounds);
const pollMaxNs = values['poll-max-ns'];
const maxSubmit = values['max-submit'];
const engineRun = join(dirname(fileURLToPath(import.meta.url)), 'engine-run.js');

interface Result {
  iops: number;
  meanUs: number;
  p99Us: number;
  cpuPct: number;
  reapPercentiles?: number[];
}

interface Variant {
  name: string;
  how: string;
  run(qd: number): Result;
}

function engine(name: string, how: string, args: string[]): Variant {
  return {
    name,
    how,
    run(qd) {
      const out = execFileSync(
        process.execPath,
        [engineRun, path!, '--qd', String(qd), '--seconds', seconds, '--ramp', ramp, ...args],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const r = JSON.parse(out.trim().split('\n').pop()!) as Result & { bad: number };
      if (r.bad !== 0) throw new Error(`${name}: ${r.bad} reads came back short or failed`);
      return r;
    },
  };
}

function fio(name: string, how: string, args: (qd: number) => string[], direct = true): Variant {
  return {
    name,
    how,
    run(qd) {
      const out = execFileSync(
        'fio',
        [
          '--name=randread',
          `--filename=${path}`,
          '--size=1G',
          '--rw=randread',
          '--bs=4k',
          `--direct=${direct ? 1 : 0}`,
          '--invalidate=0', // keep the page cache the buffered rows rely on
          '--ioengine=libaio',
          `--iodepth=${qd}`,
          '--time_based',
          `--runtime=${seconds}`,
          `--ramp_time=${ramp}`,
          '--norandommap',
          '--randrepeat=0',
          '--lat_percentiles=1',
          '--output-format=json',
          ...args(qd),
        ],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
      const r = job.read;
      if (r.iops === 0 || job.error !== 0) throw new Error(`${name}: fio error ${job.error}`);
      return {
        iops: r.iops,
        meanUs: r.lat_ns.mean / 1000,
        p99Us: r.lat_ns.percentile['99.000000'] / 1000,
        cpuPct: job.usr_cpu + job.sys_cpu,
      };
    },
  };
}

const poll = ['--poll-max-ns', pollMaxNs];
const ring = engine('aio-engine aio_ring', `userspace reap, adaptive poll ≤ ${Number(pollMaxNs) / 1000} µs, ≤ ${maxSubmit} iocbs per io_submit`, [
  '--reap', 'ring', ...poll, '--max-submit', maxSubmit,
]);
const ringWholePlug = engine('aio-engine aio_ring, whole plug', 'as above, one io_submit for all queued (the default)', [
  '--reap', 'ring', ...poll,
]);
const getevents = engine('aio-engine io_getevents', `io_getevents reap and wait, no polling, ≤ ${maxSubmit} per io_submit`, [
  '--reap', 'getevents', '--max-submit', maxSubmit,
]);
const noRas = engine('aio-engine, no reap-after-submit', 'aio_ring reap as the first row, reapAfterSubmit false', [
  '--reap', 'ring', ...poll, '--max-submit', maxSubmit, '--no-reap-after-submit',
]);
const fioPlain = fio('fio libaio', 'io_getevents (fio defaults)', () => []);
// fio reads the ring only when asked for a minimum of 0 events (its HOWTO),
// so userspace_reap needs iodepth_batch_complete_min=0: fio then spins.
const fioUr = fio('fio libaio userspace_reap', 'userspace_reap=1, iodepth_batch_complete_min=0 (spins)', (qd) => [
  '--userspace_reap=1',
  '--iodepth_batch_complete_min=0',
  `--iodepth_batch_complete_max=${qd}`,
]);

// The software path alone: the file hot in the page cache and read without
// O_DIRECT, so io_submit copies inline and the disk is out of the picture.
const ringBuffered = engine('aio-engine aio_ring, buffered', `page cache, adaptive poll ≤ ${Number(pollMaxNs) / 1000} µs, whole plug`, [
  '--reap', 'ring', ...poll, '--buffered',
]);
const fioUrBuffered = fio('fio userspace_reap, buffered', 'page cache, as fio libaio userspace_reap', (qd) => [
  '--userspace_reap=1',
  '--iodepth_batch_complete_min=0',
  `--iodepth_batch_complete_max=${qd}`,
], false);

const results = new Map<string, Result[]>();
function measure(qd: number, v: Variant): void {
  const key = `${qd} ${v.name}`;
  process.stderr.write(`bench-aio: QD${qd} ${v.name}…\n`);
  const r = v.run(qd);
  results.set(key, [...(results.get(key) ?? []), r]);
}

// Interleaved: the main pair (ring vs fio userspace_reap) runs `rounds` times at QD32.
const order: [number, Variant][] = [];
for (let i = 0; i < rounds; i++) order.push([32, fioUr], [32, ring]);
order.push([32, fioPlain], [32, getevents], [32, ringWholePlug], [32, noRas]);
order.push([1, fioUr], [1, ring], [1, fioPlain], [1, getevents]);
for (const [qd, v] of order) measure(qd, v);
process.stderr.write('bench-aio: reading the file into the page cache…\n');
execFileSync('dd', [`if=${path}`, 'of=/dev/null', 'bs=1M', 'status=none']);
measure(32, fioUrBuffered);
measure(32, ringBuffered);

function mean(qd: number, v: Variant): Result {
  const rs = results.get(`${qd} ${v.name}`)!;
  const avg = (f: (r: Result) => number): number => rs.reduce((s, r) => s + f(r), 0) / rs.length;
  return { iops: avg((r) => r.iops), meanUs: avg((r) => r.meanUs), p99Us: avg((r) => r.p99Us), cpuPct: avg((r) => r.cpuPct), reapPercentiles: rs[0].reapPercentiles };
}

const pad = (s: string, n: number): string => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const lpad = (s: string, n: number): string => (s.length >= n ? s : ' '.repeat(n - s.length) + s);
const k = (n: number): string => `${(n / 1000).toFixed(1)}k`;

console.log(`4 KiB random reads, O_DIRECT, ${path}, ${seconds} s per run after ${ramp} s ramp-up`);
console.log(`(rows with n=${rounds} are the mean of ${rounds} interleaved runs)`);
console.log('');
console.log(`${pad('QD', 4)}${pad('variant', 36)}${lpad('IOPS', 9)}${lpad('mean µs', 10)}${lpad('p99 µs', 9)}${lpad('CPU %', 8)}${lpad('vs fio-ur', 11)}`);
for (const qd of [32, 1]) {
  const ref = mean(qd, fioUr).iops;
  const rows = qd === 32 ? [ring, ringWholePlug, noRas, getevents, fioUr, fioPlain] : [ring, getevents, fioUr, fioPlain];
  for (const v of rows) {
    const r = mean(qd, v);
    const n = results.get(`${qd} ${v.name}`)!.length;
    console.log(
      `${pad(String(qd), 4)}${pad(v.name + (n > 1 ? ` (n=${n})` : ''), 36)}${lpad(k(r.iops), 9)}${lpad(r.meanUs.toFixed(0), 10)}${lpad(r.p99Us.toFixed(0), 9)}${lpad(r.cpuPct.toFixed(0), 8)}${lpad((r.iops / ref).toFixed(2), 11)}`,
    );
  }
}
console.log('software path: file in the page cache, no O_DIRECT (ratio against the buffered fio row)');
{
  const ref = mean(32, fioUrBuffered).iops;
  for (const v of [ringBuffered, fioUrBuffered]) {
    const r = mean(32, v);
    console.log(
      `${pad('32', 4)}${pad(v.name, 36)}${lpad(k(r.iops), 9)}${lpad(r.meanUs.toFixed(0), 10)}${lpad(r.p99Us.toFixed(0), 9)}${lpad(r.cpuPct.toFixed(0), 8)}${lpad((r.iops / ref).toFixed(2), 11)}`,
    );
  }
}
console.log('');
for (const v of [ring, ringWholePlug, noRas, getevents, fioUr, fioPlain, ringBuffered, fioUrBuffered]) {
  console.log(`  ${pad(v.name, 34)}${v.how}`);
}
for (const v of [ring, fioUr]) {
  const runs = results.get(`32 ${v.name}`)!.map((r) => k(r.iops)).join(', ');
  console.log(`  QD32 ${v.name} runs in order: ${runs}`);
}
console.log('');
console.log(`completions per reap, QD32 (percentiles as in seed 000)`);
console.log(`${pad('', 26)}${REAP_PERCENTILES.map((p) => lpad(String(p), 6)).join('')}`);
for (const [label, v] of [
  ['reap-after-submit on', ring],
  ['reap-after-submit off', noRas],
] as const) {
  const ps = mean(32, v).reapPercentiles ?? [];
  console.log(`${pad(label, 26)}${ps.map((p) => lpad(String(p), 6)).join('')}`);
}
console.log('');
const ratio = mean(32, ring).iops / mean(32, fioUr).iops;
console.log(`aio-engine / fio-libaio-userspace-reap QD32 IOPS ratio: ${ratio.toFixed(2)}`);
