/**
 * One benchmark run of the AIO engine: 4 KiB random O_DIRECT reads at a
 * fixed queue depth for a fixed time, the way fio's randread job does it.
 * Prints one JSON line (IOPS, latency, completions-per-reap percentiles).
 *
 *   node dist/bench/aio/engine-run.js FILE --qd 32 --seconds 12
 *        [--reap ring|getevents] [--no-reap-after-submit] [--poll-max-ns N]
 *        [--max-submit N] [--ramp 1] [--buffered]
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import * as file from '../../sys/file.js';
import { NativeMemory } from '../../sys/memory.js';
import { AioEngine } from '../../aio/engine.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    qd: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '12' },
    ramp: { type: 'string', default: '1' },
    reap: { type: 'string', default: 'ring' },
    'no-reap-after-submit': { type: 'boolean', default: false },
    'poll-max-ns': { type: 'string', default: '0' },
    bs: { type: 'string', default: '4096' },
    'max-submit': { type: 'string', default: '1073741824' },
    buffered: { type: 'boolean', default: false },
  },
});
const path = positionals[0];
if (path === undefined) throw new Error('usage: engine-run FILE [options]');
const qd = Number(values.qd);
const bs = Number(values.bs);
const seconds = Number(values.seconds);
const rampMs = Number(values.ramp) * 1000;

const fd = file.open(path, values.buffered ? file.O_RDONLY : file.O_RDONLY | file.O_DIRECT);
const blocks = Math.floor(file.fstat(fd, path).size / bs);
const buf = NativeMemory.aligned(qd * bs);

// Latency in 1 µs buckets up to 1 s (one typed-array increment per IO).
const LAT_BUCKETS = 1_000_000;
const lat = new Uint32Array(LAT_BUCKETS + 1);
let latSum = 0;
let ios = 0;
let bad = 0;
const started = new Float64Array(qd);
let stop = false;

// xorshift32: a random block per IO without allocating.
let rnd = 0x9e3779b9;
function nextBlock(): number {
  rnd ^= rnd << 13;
  rnd ^= rnd >>> 17;
  rnd ^= rnd << 5;
  return (rnd >>> 0) % blocks;
}

const engine: AioEngine = new AioEngine(
  {
    depth: qd,
    userspaceReap: values.reap === 'ring',
    reapAfterSubmit: !values['no-reap-after-submit'],
    pollMaxNs: Number(values['poll-max-ns']),
    useEventFd: false,
    maxSubmit: Number(values['max-submit']),
  },
  (tag, res) => {
    const now = performance.now();
    if (res !== bs) bad++;
    const us = Math.floor((now - started[tag]) * 1000);
    lat[us < LAT_BUCKETS ? us : LAT_BUCKETS]++;
    latSum += now - started[tag];
    ios++;
    if (stop) return;
    started[tag] = now;
    engine.read(tag, fd, buf.addr + tag * bs, bs, nextBlock() * bs);
  },
);
if (values.reap === 'ring' && !engine.userspaceReap) throw new Error('the aio_ring header is not usable here');

const t0 = performance.now();
for (let tag = 0; tag < qd; tag++) {
  started[tag] = t0;
  engine.read(tag, fd, buf.addr + tag * bs, bs, nextBlock() * bs);
}
engine.flush();

// Ramp up, then measure from a clean slate.
while (performance.now() - t0 < rampMs) engine.wait();
lat.fill(0);
latSum = 0;
ios = 0;
engine.stats.reset();
const cpu0 = process.cpuUsage();
const m0 = performance.now();
const end = m0 + seconds * 1000;
while (performance.now() < end) engine.wait();
const elapsed = (performance.now() - m0) / 1000;
const measured = ios;
const cpu = process.cpuUsage(cpu0);
stop = true;
engine.drainAll();
engine.destroy();
file.close(fd);
buf.free();

function latPercentileUs(p: number): number {
  const rank = Math.ceil((p / 100) * measured);
  let seen = 0;
  for (let i = 0; i <= LAT_BUCKETS; i++) {
    seen += lat[i];
    if (seen >= rank) return i + 0.5;
  }
  return LAT_BUCKETS;
}

const s = engine.stats.snapshot();
console.log(
  JSON.stringify({
    iops: measured / elapsed,
    meanUs: (latSum / measured) * 1000,
    p99Us: latPercentileUs(99),
    cpuPct: ((cpu.user + cpu.system) / 1e6 / elapsed) * 100,
    bad,
    reapPercentiles: s.reapPercentiles,
    pollNs: engine.poller.pollNs,
    stats: s,
  }),
);
