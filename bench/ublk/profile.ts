/**
 * Where ublk-ts spends its time, on one workload (4k randread QD32 by
 * default), for part 3 of the bench issue: run inside the VM by
 * bench/ublk/profile (tests/vm/ublk-env run --disk 2048 -- bench/ublk/profile).
 *
 * 1. CPU profile (node --cpu-prof, through NODE_OPTIONS into the daemon and
 *    its queue workers): top self-time functions of the busiest thread.
 * 2. strace -c -f on the daemon: syscalls per IO; also of ublksrv's daemon
 *    (variants ublksrv-loop, ublksrv-null, with $UBLK_UBLKSRV set).
 * 3. perf record -e cpu-clock -a (when perf works in the guest): where the
 *    whole machine spends its time, ublk-ts against the kernel loop driver
 *    and ublksrv, with the serving daemon's threads on their own.
 *
 *   node dist/bench/ublk/profile.js --image IMG [--seconds 10] [--out DIR]
 *        [--variants aio,uring,null] [--steps cpuprof,strace,perf]
 * (variants: aio, aio-poll, uring, null, nbd and ublksrv-loop, ublksrv-null,
 * ublksrv-nbd; the nbd ones need nbdkit and fio's nbd engine)
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type NbdServer, prefill, startNbdkit, stopNbdkit } from './nbd.js';
import { type UblksrvTarget, addUblksrv, delUblksrv, diskIos, findUblksrv } from './ublksrv.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const UBLK = join(root, 'bin/ublk');
const { values } = parseArgs({
  options: {
    image: { type: 'string' },
    seconds: { type: 'string', default: '10' },
    out: { type: 'string', default: '/run/ublk-profile' },
    variants: { type: 'string', default: 'aio,uring,null' },
    steps: { type: 'string', default: 'cpuprof,strace,perf' },
    rw: { type: 'string', default: 'randread' },
    bs: { type: 'string', default: '4k' },
    qd: { type: 'string', default: '32' },
    top: { type: 'string', default: '25' },
  },
});
if (values.image === undefined) throw new Error('usage: profile --image IMG');
const image = realpathSync(values.image);
const seconds = Number(values.seconds);
const out = values.out!;
const steps = values.steps!.split(',');
const say = (s: string): void => void process.stderr.write(`bench-ublk profile: ${s}\n`);
mkdirSync(out, { recursive: true });

/** The nbd variants read an nbdkit memory export of the image's size, started (and written in full) when one is asked for. */
const nbdSocket = join(out, 'nbd.sock');
const addArgs: Record<string, string[]> = {
  nbd: ['-t', 'nbd', '--url', `nbd+unix:///?socket=${nbdSocket}`],
  aio: ['-t', 'loop', '-f', image, '--engine', 'aio'],
  'aio-poll': ['-t', 'loop', '-f', image, '--engine', 'aio', '--poll-max-ns', '50000'],
  uring: ['-t', 'loop', '-f', image, '--engine', 'uring'],
  null: ['-t', 'null', '-s', '1G'],
};
/** ublksrv variants: strace and perf (no counters, no JavaScript). */
const ublksrvArgs: Record<string, [UblksrvTarget, string[]]> = {
  'ublksrv-loop': ['loop', ['-f', image]],
  'ublksrv-null': ['null', []],
  'ublksrv-nbd': ['nbd', ['--unix', nbdSocket]],
};

function ublk(args: string[], env: NodeJS.ProcessEnv = process.env): string {
  // cwd: V8 writes isolate-*.log files there with --perf-basic-prof
  return execFileSync(process.execPath, [UBLK, ...args], { encoding: 'utf8', env, cwd: out, stdio: ['ignore', 'pipe', 'inherit'] });
}

function fioArgs(path: string, secs: number): string[] {
  return [
    '--name=p',
    `--filename=${path}`,
    `--rw=${values.rw}`,
    `--bs=${values.bs}`,
    `--iodepth=${values.qd}`,
    '--ioengine=libaio',
    '--direct=1',
    '--time_based=1',
    `--runtime=${secs}`,
    '--norandommap=1',
    '--randrepeat=0',
    '--output-format=json',
  ];
}
function fio(path: string, secs = seconds): number {
  const o = execFileSync('fio', fioArgs(path, secs), { encoding: 'utf8' });
  const job = JSON.parse(o.slice(o.indexOf('{'))).jobs[0];
  return values.rw!.includes('write') ? job.write.iops : job.read.iops;
}

type Stats = { total: Record<string, number>; target: { aio?: (Record<string, number> | null)[] } | null };
const statsOf = (id: number): Stats => JSON.parse(ublk(['stats', '-n', String(id), '--json'])) as Stats;
const ioCount = (s: Stats): number => s.total.reads + s.total.writes;

// ---- 1. CPU profiles ----------------------------------------------------------------

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

function summarize(file: string, top: number): string[] {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  // self time from the sample deltas (µs), attributed to each sample's node
  const self = new Map<number, number>();
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) self.set(samples[i], (self.get(samples[i]) ?? 0) + (deltas[i + 1] ?? deltas[i] ?? 0));
  const byFn = new Map<string, number>();
  let total = 0;
  for (const n of p.nodes) {
    const t = self.get(n.id) ?? 0;
    total += t;
    const cf = n.callFrame;
    const url = cf.url.replace(/^file:\/\/.*?\/dist\//, '').replace(/^node:/, 'node:');
    const key = `${cf.functionName || '(anonymous)'} ${url ? `${url}:${cf.lineNumber + 1}` : ''}`.trim();
    byFn.set(key, (byFn.get(key) ?? 0) + t);
  }
  const rows = [...byFn.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  const lines = [`${file.split('/').pop()}: ${(total / 1e6).toFixed(2)} s sampled, ${(((p.endTime - p.startTime) / 1e6)).toFixed(1)} s wall`];
  for (const [k, t] of rows) lines.push(`  ${((100 * t) / Math.max(1, total)).toFixed(1).padStart(5)}%  ${(t / 1000).toFixed(0).padStart(7)} ms  ${k}`);
  return lines;
}

/** The first line a child prints on stdout. */
function firstLine(child: ReturnType<typeof spawn>): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (c: string) => {
      buf += c;
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(buf.slice(0, nl));
    });
    child.on('exit', (code) => reject(new Error(`ublk add --foreground exited (${code}) before the device was live`)));
  });
}

async function cpuProfile(variant: string): Promise<void> {
  const dir = join(out, `cpuprof-${variant}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // --cpu-prof is not allowed in NODE_OPTIONS: serve from a foreground
  // `ublk add` run with the flag (its queue workers inherit it).
  // The profiler's SIGPROF (1 kHz) can make ADD_DEV fail with ECANCELED
  // (seen under TCG: io-wq's first worker thread cannot be created while
  // signals keep arriving): try again.
  let child: ReturnType<typeof spawn> | null = null;
  let exited: Promise<void> = Promise.resolve();
  let d: { id: number; blockDevice: string; pid: number } | null = null;
  for (let attempt = 1; d === null; attempt++) {
    const c = spawn(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, UBLK, 'add', ...addArgs[variant], '--foreground', '--json'], {
      cwd: out,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    exited = new Promise<void>((r) => c.on('exit', () => r()));
    try {
      d = JSON.parse(await firstLine(c)) as { id: number; blockDevice: string; pid: number };
      child = c;
    } catch (e) {
      say(`attempt ${attempt}: ${(e as Error).message}`);
      if (attempt === 3) throw e;
    }
  }
  const s0 = statsOf(d.id);
  const iops = fio(d.blockDevice);
  const s1 = statsOf(d.id);
  child!.kill('SIGTERM'); // the foreground daemon deletes the device, then writes its profiles
  await exited;
  const ios = ioCount(s1) - ioCount(s0);
  console.log(`\n== CPU profile, ublk-ts ${variant}, ${values.bs} ${values.rw} QD${values.qd}: ${iops.toFixed(0)} IOPS (profiler on), ${ios} IOs`);
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => join(dir, f));
  const weight = (f: string): number => {
    const p = JSON.parse(readFileSync(f, 'utf8')) as Profile;
    return (p.samples ?? []).length;
  };
  // the busiest threads first: the queue worker(s), then the main thread
  const sorted = files.map((f) => [f, weight(f)] as const).sort((a, b) => b[1] - a[1]);
  for (const [f] of sorted.slice(0, 2)) for (const l of summarize(f, Number(values.top))) console.log(l);
  if (sorted.length === 0) console.log(`  no profile in ${dir}`);
}

// ---- 2. strace -c --------------------------------------------------------------------

/** strace -c -f on ublksrv's daemon, per IO by the block layer's count. */
function straceUblksrv(variant: string): void {
  const found = findUblksrv();
  if ('missing' in found) {
    console.log(`\n== syscalls per IO, ${variant}: left out, ${found.missing}`);
    return;
  }
  const [type, args] = ublksrvArgs[variant];
  const d = addUblksrv(found.bin, 1000, type, ['-q', '1', '-d', '128', ...args]);
  try {
    const log = join(out, `strace-${variant}.txt`);
    const st = spawn('strace', ['-c', '-f', '-o', log, '-p', String(d.pid)], { stdio: 'ignore' });
    spawnSync('sleep', ['2']);
    const n0 = diskIos(d.path);
    const iops = fio(d.path);
    const ios = diskIos(d.path) - n0;
    st.kill('SIGINT');
    for (let i = 0; i < 100 && existsSync(`/proc/${st.pid}`); i++) spawnSync('sleep', ['0.1']);
    console.log(`\n== syscalls per IO, ${variant} (strace -c -f, ${ios} IOs, ${iops.toFixed(0)} IOPS under strace)`);
    printStrace(log, ios);
  } finally {
    delUblksrv(found.bin, d.id);
  }
}

function printStrace(log: string, ios: number): void {
  const text = existsSync(log) ? readFileSync(log, 'utf8') : '';
  for (const line of text.split('\n')) {
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)?\s*(\w+)\s*$/.exec(line);
    if (m) console.log(`  ${m[3].padEnd(20)} ${m[1].padStart(9)} calls  ${(Number(m[1]) / ios).toFixed(3).padStart(7)} per IO${m[2] ? `  (${m[2]} errors)` : ''}`);
  }
  if (text === '') console.log('  (strace wrote nothing)');
}

function straceCount(variant: string): void {
  if (variant in ublksrvArgs) return straceUblksrv(variant);
  const d = JSON.parse(ublk(['add', ...addArgs[variant], '--json'])) as { id: number; blockDevice: string; pid: number };
  try {
    const log = join(out, `strace-${variant}.txt`);
    const s0 = statsOf(d.id);
    const st = spawn('strace', ['-c', '-f', '-o', log, '-p', String(d.pid)], { stdio: 'ignore' });
    spawnSync('sleep', ['2']); // strace attaches to every thread
    const iops = fio(d.blockDevice);
    const s1 = statsOf(d.id);
    st.kill('SIGINT');
    for (let i = 0; i < 100 && st.exitCode === null && existsSync(`/proc/${st.pid}`); i++) spawnSync('sleep', ['0.1']);
    spawnSync('sleep', ['1']);
    const ios = ioCount(s1) - ioCount(s0);
    const aio0 = (s0.target?.aio ?? []).filter((q) => q !== null) as Record<string, number>[];
    const aio1 = (s1.target?.aio ?? []).filter((q) => q !== null) as Record<string, number>[];
    const dsum = (n: string): number => aio1.reduce((a, q) => a + q[n], 0) - aio0.reduce((a, q) => a + q[n], 0);
    console.log(`\n== syscalls per IO, ublk-ts ${variant} (strace -c -f, ${ios} IOs, ${iops.toFixed(0)} IOPS under strace)`);
    if (aio1.length > 0) console.log(`  io_submit per IO from the AIO counters: ${(dsum('submits') / ios).toFixed(3)}, reaps ${(dsum('reaps') / ios).toFixed(3)}`);
    console.log(`  dispatcher loops per IO: ${((s1.total.enters - s0.total.enters) / ios).toFixed(3)}, waits ${((s1.total.waits - s0.total.waits) / ios).toFixed(3)}`);
    printStrace(log, ios);
  } finally {
    ublk(['del', '-n', String(d.id)]);
  }
}

// ---- 3. perf, whole machine -------------------------------------------------------

const PERF_PERIOD_US = 250;

/** `daemon`: the serving process, whose threads get their own reports (none for the kernel loop driver). */
function perfProfile(label: string, path: string, daemon?: { pid: number }): void {
  const data = join(out, `perf-${label}.data`);
  fio(path, 8); // warm up first: a JIT still compiling is not the steady state
  // A sample every 250 µs of CPU time (cpu-clock's period is in ns): samples × 250 / IOs is µs per IO.
  // Under single-threaded TCG a task's time also holds the turns its vCPU
  // waited while the other one ran, so with both vCPUs busy every µs figure
  // is inflated alike: compare the shares within one run, not across runs.
  const rec = spawn('perf', ['record', '-q', '-e', 'cpu-clock', '-c', String(PERF_PERIOD_US * 1000), '-a', '-o', data, '--', 'sleep', String(seconds - 2)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  rec.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const iops = fio(path);
  const r = spawnSync('sleep', ['1']);
  void r;
  console.log(`\n== perf (cpu-clock, all CPUs), ${label}: ${iops.toFixed(0)} IOPS`);
  if (!existsSync(data)) {
    console.log(`  perf recorded nothing: ${err.trim().split('\n').slice(-2).join(' ')}`);
    return;
  }
  // perf report over all samples stops at some samples of fio or node
  // ("failed to process sample"); perf script goes on: count by command,
  // and by symbol for the processes that serve the IO.
  const script = spawnSync('perf', ['script', '-i', data, '-F', 'comm,pid,ip,sym'], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const samples = (script.stdout ?? '')
    .split('\n')
    .map((l) => /^\s*(.*?)\s+(\d+)\s+([0-9a-f]+)\s*(.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ comm: m[1], pid: Number(m[2]), sym: `${m[3].startsWith('ffff') ? '[k]' : '[u]'} ${m[4].trim() || '?'}` }));
  const all = samples.length;
  const ios = iops * (seconds - 2);
  const top = (title: string, keys: string[], max: number): void => {
    const n = new Map<string, number>();
    for (const k of keys) n.set(k, (n.get(k) ?? 0) + 1);
    console.log(`  -- ${title}: ${((keys.length * PERF_PERIOD_US) / ios).toFixed(1)} µs per IO (${keys.length} of ${all} samples); share of all, µs per IO`);
    for (const [k, c] of [...n.entries()].sort((x, y) => y[1] - x[1]).slice(0, max)) {
      console.log(`  ${((100 * c) / all).toFixed(2).padStart(6)}% ${((c * PERF_PERIOD_US) / ios).toFixed(2).padStart(7)}  ${k}`);
    }
  };
  top('by command (swapper is idle)', samples.map((x) => x.comm), 10);
  top('by command, kernel or user', samples.map((x) => `${x.comm.replace(/\d+$/, '')} ${x.sym.slice(0, 3)}`), 12);
  top('fio, by symbol', samples.filter((x) => x.comm === 'fio').map((x) => x.sym), 25);
  const nbdkit = samples.filter((x) => x.comm.startsWith('nbdkit'));
  if (nbdkit.length > 0) top('nbdkit, by symbol', nbdkit.map((x) => x.sym), 25);
  if (daemon === undefined) return;
  const mine = samples.filter((x) => x.pid === daemon.pid);
  top(`the daemon (pid ${daemon.pid}), by symbol`, mine.map((x) => x.sym), 45);
  top('the daemon, by thread', mine.map((x) => x.comm), 12);
  // Node's main thread, libuv's pool and V8's helpers (GC) all show as "node".
  const others = mine.filter((x) => x.comm === 'node');
  if (others.length > 0) top('the daemon\'s "node" threads (main, libuv, V8 helpers), by symbol', others.map((x) => x.sym), 25);
}

// ---- run ------------------------------------------------------------------------------

const variants = values.variants!.split(',');
for (const v of variants) if (!(v in addArgs) && !(v in ublksrvArgs)) throw new Error(`unknown variant ${v}`);
const ours = variants.filter((v) => v in addArgs);
let nbdServer: NbdServer | null = null;
if (variants.some((v) => v === 'nbd' || v === 'ublksrv-nbd')) {
  const size = statSync(image).size;
  nbdServer = startNbdkit(nbdSocket, size);
  process.on('exit', () => stopNbdkit(nbdServer!));
  say('writing the nbdkit memory export in full');
  prefill(nbdServer, size);
}
if (steps.includes('cpuprof')) for (const v of ours) await cpuProfile(v);
if (steps.includes('strace')) for (const v of variants) straceCount(v);
if (steps.includes('perf')) {
  const loop = execFileSync('losetup', ['--find', '--show', '--direct-io=on', image], { encoding: 'utf8' }).trim();
  try {
    perfProfile('kernel loop dio', loop);
  } finally {
    execFileSync('losetup', ['-d', loop]);
  }
  for (const v of ours) {
    // --perf-basic-prof: /tmp/perf-PID.map names the JIT-compiled JavaScript for perf
    const env = { ...process.env, NODE_OPTIONS: '--perf-basic-prof' };
    const d = JSON.parse(ublk(['add', ...addArgs[v], '--json'], env)) as { id: number; blockDevice: string; pid: number };
    try {
      perfProfile(`ublk-ts ${v}`, d.blockDevice, { pid: d.pid });
    } finally {
      ublk(['del', '-n', String(d.id)]);
    }
  }
  const found = findUblksrv();
  for (const v of variants.filter((x) => x in ublksrvArgs)) {
    if ('missing' in found) {
      console.log(`\n== perf, ${v}: left out, ${found.missing}`);
      continue;
    }
    const [type, args] = ublksrvArgs[v];
    const d = addUblksrv(found.bin, 1000, type, ['-q', '1', '-d', '128', ...args]);
    try {
      perfProfile(v, d.path, { pid: d.pid });
    } finally {
      delUblksrv(found.bin, d.id);
    }
  }
}
// The nbdkit child keeps the event loop alive: 'exit' would never come.
if (nbdServer !== null) stopNbdkit(nbdServer);
