/**
 * bench-ublk: ublk-ts against the kernel loop driver and the raw image, in
 * one run, on one backing image on a real block device (bench/ublk/run makes
 * it). Every line is one fio run (libaio, O_DIRECT, time-based, same
 * runtime); the ublk-ts devices are created fresh for each (variant,
 * workload), so their statistics (`ublk stats -n ID --json`) belong to that
 * run alone. Variants of one workload run back to back, so drift in the
 * (virtual) disk hits them alike.
 *
 * Prints the table (each line against the kernel loop line of its
 * workload, and against the C reference server ublksrv: its loop line, or
 * for the null lines its null line), ublk-ts null against the kernel's
 * null_blk (the dispatcher's own cost), the per-IO cost counters of the ublk-ts lines, the
 * completions-per-reap percentiles of the AIO engine, writes everything as
 * JSON (--out), and last the summary lines:
 *   ublk-ts loop (aio) / ublksrv loop 4k randread QD32 IOPS ratio: <x.xx>
 *   ublk-ts loop (aio) / kernel loop 4k randread QD32 IOPS ratio: <x.xx>
 *
 * The qcow2 lines serve a fully allocated 1 GiB qcow2 image (made beside the
 * raw one) through the ublk-ts qcow2 target and through qemu-nbd with the
 * kernel's nbd client, and are compared with ublk-ts loop on the raw image.
 *
 * The NBD lines (issue 17) read one nbdkit memory export (the size of the
 * image, started once for the run and written in full first) through the
 * ublk-ts nbd target and through the kernel's nbd client (nbd-client, from
 * bench/ublk/setup), one connection per queue for both, and are compared
 * with each other; so is ublksrv's nbd target on the same export, to show
 * where the C reference server stands against the kernel client; two
 * summary lines before the last two:
 *   ublk-ts nbd / kernel nbd 4k randread QD32 IOPS ratio: <x.xx>
 *   ublk-ts nbd / kernel nbd 128k seq read QD8 MB/s ratio: <x.xx>
 * Without nbdkit (or fio's nbd engine) both lines are left out, without
 * nbd-client the kernel one, and the run says why.
 *
 * ublksrv comes from $UBLK_UBLKSRV (the directory bench/ublksrv/build
 * printed); without it its lines are left out and the run says why.
 *
 * $UBLK_BENCH_BASELINE names another built ublk-ts checkout (an older
 * commit): its loop aio and nbd lines run in the same rounds as this one's, so a
 * change is measured before and after in one run, under the same noise.
 *
 * On a host whose neighbours move single runs by ±30%, one line per variant
 * cannot settle a 10% question: every workload runs its variants in rounds
 * (all variants, then all again in reverse order), --repeat times, and the 4k randread QD32
 * workload, whose ratio is the goal, --headline-repeat times. A line shows the
 * median run (its counters are that run's), the spread of the runs, and the
 * median of the per-round ratios to the kernel loop line of the same round.
 *
 *   node dist/bench/ublk/main.js --image IMG [--seconds 15] [--ramp 8]
 *        [--poll-max-ns 50000] [--out bench/results/latest.json]
 *        [--workloads a,b] [--variants x,y] [--repeat 1] [--headline-repeat 3]
 *        [--stop-rounds 3]   (del, kill and recover times under load; 0: skip)
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { REAP_PERCENTILES } from '../../aio/stats.js';
import { hasTool, missingTool, run, sleepSync } from './exec.js';
import { type Workload, median, runFio } from './fio.js';
import { type NbdServer, connectKernelNbd, disconnectKernelNbd, fioNbdMissing, prefill, startNbdkit, stopNbdkit } from './nbd.js';
import { measureStopTimes, type StopTimes } from './stop-times.js';
import { type UblksrvTarget, addUblksrv, delUblksrv, diskIos, findUblksrv } from './ublksrv.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const UBLK = join(root, 'bin/ublk');
/** Another ublk-ts checkout (built) whose loop aio line runs beside ours, or ''. */
const BASELINE = process.env.UBLK_BENCH_BASELINE ?? '';
const BASELINE_UBLK = BASELINE === '' ? '' : join(BASELINE, 'bin/ublk');
if (BASELINE !== '' && !existsSync(join(BASELINE, 'dist/tools/cli.js'))) throw new Error(`UBLK_BENCH_BASELINE=${BASELINE}: no built ublk-ts there (dist/tools/cli.js)`);
/** The device id the ublksrv lines use: one at a time, far from ublk-ts's own. */
const UBLKSRV_ID = 1000;

const { values } = parseArgs({
  options: {
    image: { type: 'string' },
    seconds: { type: 'string', default: '15' },
    ramp: { type: 'string', default: '8' },
    'poll-max-ns': { type: 'string', default: '50000' },
    depth: { type: 'string', default: '128' },
    out: { type: 'string', default: join(root, 'bench/results/latest.json') },
    workloads: { type: 'string' },
    variants: { type: 'string' },
    repeat: { type: 'string', default: '1' },
    'headline-repeat': { type: 'string', default: '3' },
    'stop-rounds': { type: 'string', default: '3' },
  },
});
if (values.image === undefined) throw new Error('usage: main --image IMG [--seconds N] [--ramp N] [--out FILE]');
const image = realpathSync(values.image);
const seconds = Number(values.seconds);
const ramp = Number(values.ramp);
const pollMaxNs = Number(values['poll-max-ns']);
const depth = Number(values.depth);
const HEADLINE = 'randread-4k-qd32';
const repeat = Number(values.repeat);
const headlineRepeat = Math.max(repeat, Number(values['headline-repeat']));
for (const [name, n] of [['--repeat', repeat], ['--headline-repeat', headlineRepeat]] as const) {
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a whole number of rounds, 1 or more`);
}
const started = Date.now();

const say = (s: string): void => void process.stderr.write(`bench-ublk: ${s}\n`);

// ---- workloads and variants ------------------------------------------------------

const WORKLOADS: Workload[] = [
  { key: 'randread-4k-qd1', label: '4k randread QD1', rw: 'randread', bs: '4k', qd: 1, jobs: 1, bandwidth: false },
  { key: 'randread-4k-qd32', label: '4k randread QD32', rw: 'randread', bs: '4k', qd: 32, jobs: 1, bandwidth: false },
  { key: 'randwrite-4k-qd32', label: '4k randwrite QD32', rw: 'randwrite', bs: '4k', qd: 32, jobs: 1, bandwidth: false },
  { key: 'read-128k-qd8', label: '128k seq read QD8', rw: 'read', bs: '128k', qd: 8, jobs: 1, bandwidth: true },
  { key: 'randread-4k-qd32-2jobs', label: '4k randread QD32 x2 jobs, 2 queues', rw: 'randread', bs: '4k', qd: 32, jobs: 2, bandwidth: false },
];

interface Device {
  path: string;
  /** a qemu-nbd connection to take down */
  nbd?: string;
  /** a kernel nbd client connection (nbd-client) to take down */
  knbd?: string;
  /** a ublk-ts device */
  id?: number;
  /** a ublksrv device */
  ublksrvId?: number;
  /** the serving process (ublk-ts daemon or ublksrv daemon) */
  pid?: number;
  /** the ublk-ts CLI that made it */
  cli?: string;
}

interface Variant {
  key: string;
  label: string;
  /** a ublk-ts device (fresh per run) */
  ublk?: (w: Workload) => string[];
  /** the `ublk` CLI that serves it, when not this checkout's (the baseline) */
  cli?: string;
  /** the AIO engine: completions-per-reap percentiles are reported */
  aio?: boolean;
  /** a ublksrv device of this target type (fresh per run) */
  ublksrv?: UblksrvTarget;
  /** workloads this variant sits out */
  skip?: (w: Workload) => boolean;
}

/** The workloads of the qcow2 comparison (issue 16). */
const QCOW2_WORKLOADS = new Set(['randread-4k-qd32', 'randwrite-4k-qd32', 'read-128k-qd8']);
const notQcow2Workload = (w: Workload): boolean => !QCOW2_WORKLOADS.has(w.key);
/** The fully allocated qcow2 image beside the raw one, made when a qcow2 line runs. */
const qcow2Image = join(dirname(image), 'bench.qcow2');
const NBD_DEV = '/dev/nbd0';
/** The workloads of the NBD comparison (issue 17); the 2-job one has two connections a side (multi-conn). */
const NBD_WORKLOADS = new Set(['randread-4k-qd32', 'read-128k-qd8', 'randread-4k-qd32-2jobs']);
const notNbdWorkload = (w: Workload): boolean => !NBD_WORKLOADS.has(w.key);
/** The lines that read the nbdkit export: the ublk-ts nbd target (and its baseline), ublksrv's, and the kernel client. */
const NBD_VARIANTS = ['ublk-nbd', 'ublk-nbd-base', 'ublksrv-nbd', 'knbd'];
const isNbdVariant = (v: Variant): boolean => NBD_VARIANTS.includes(v.key);
/** The kernel nbd client's device: not qemu-nbd's, so a line left connected by one cannot block the other. */
const KNBD_DEV = '/dev/nbd1';
/** The nbdkit memory export the NBD lines read, live from before the first line to cleanup(). */
let nbdServer: NbdServer | null = null;
const nbdSocket = join(dirname(image), 'nbd.sock');
/** Why the NBD lines, or the kernel one, are missing (for the report), or ''. */
let nbdMissing = '';

let loopDev = '';
let loopName = '';
/** /dev/nullb0, or a brd /dev/ram0 where null_blk is missing (see findNullDevice). */
let nullDev = '';
/** The module this run loaded for it, unloaded again by cleanup(). */
let nullModule = '';
const VARIANTS: Variant[] = [
  { key: 'raw', label: 'raw image (O_DIRECT)' },
  { key: 'kloop', label: 'kernel loop dio' },
  { key: 'ublk-aio', label: 'ublk-ts loop aio', aio: true, ublk: (w) => ['-t', 'loop', '-f', image, '--engine', 'aio', ...qd(w)] },
  {
    key: 'ublk-aio-poll',
    label: `ublk-ts loop aio poll`,
    aio: true,
    ublk: (w) => ['-t', 'loop', '-f', image, '--engine', 'aio', '--poll-max-ns', String(pollMaxNs), ...qd(w)],
  },
  // Before ublk-ts set its disks' scheduler to none, as the kernel loop
  // driver does: one queue got the kernel's mq-deadline (a 2-queue disk gets none anyway).
  {
    key: 'ublk-aio-mqdl',
    label: 'ublk-ts loop aio, mq-deadline',
    aio: true,
    ublk: (w) => ['-t', 'loop', '-f', image, '--engine', 'aio', '--scheduler', 'mq-deadline', ...qd(w)],
    skip: (w) => w.jobs > 1,
  },
  {
    key: 'ublk-aio-base',
    label: 'ublk-ts loop aio, baseline',
    aio: true,
    cli: BASELINE_UBLK,
    ublk: (w) => ['-t', 'loop', '-f', image, '--engine', 'aio', ...qd(w)],
  },
  { key: 'ublk-uring', label: 'ublk-ts loop uring', ublk: (w) => ['-t', 'loop', '-f', image, '--engine', 'uring', ...qd(w)] },
  { key: 'ublk-null', label: 'ublk-ts null', ublk: (w) => ['-t', 'null', '-s', '1G', ...qd(w)] },
  // The C reference server, same queues and depth as ublk-ts.
  { key: 'ublksrv-loop', label: 'ublksrv loop', ublksrv: 'loop' },
  { key: 'ublksrv-null', label: 'ublksrv null', ublksrv: 'null' },
  // The kernel's own memory-less driver: what the ublk-ts null line pays for
  // its trip through userspace (brd where null_blk is missing).
  { key: 'nullblk', label: 'kernel null_blk' },
  // qcow2: the same data through the ublk-ts qcow2 target and through qemu-nbd + the kernel nbd client.
  { key: 'qcow2', label: 'ublk-ts qcow2', aio: true, ublk: (w) => ['-t', 'qcow2', '-f', qcow2Image, ...qd(w)], skip: notQcow2Workload },
  { key: 'qemu-nbd', label: 'qemu-nbd + kernel nbd, qcow2', skip: notQcow2Workload },
  // NBD: one nbdkit memory export through the ublk-ts nbd target and through the kernel's nbd client.
  { key: 'ublk-nbd', label: 'ublk-ts nbd', ublk: (w) => ['-t', 'nbd', '--url', nbdServer!.url, ...qd(w)], skip: notNbdWorkload },
  { key: 'ublk-nbd-base', label: 'ublk-ts nbd, baseline', cli: BASELINE_UBLK, ublk: (w) => ['-t', 'nbd', '--url', nbdServer!.url, ...qd(w)], skip: notNbdWorkload },
  { key: 'knbd', label: 'kernel nbd (nbd-client)', skip: notNbdWorkload },
  // The C reference server's nbd target on the same export: how near a ublk server, C or not, comes to the kernel client.
  { key: 'ublksrv-nbd', label: 'ublksrv nbd', ublksrv: 'nbd', skip: notNbdWorkload },
];
/** ublk-ts queues, ublksrv queues and kernel nbd connections of a workload: one per fio job. */
const queues = (w: Workload): number => (w.jobs > 1 ? 2 : 1);
function qd(w: Workload): string[] {
  return ['-q', String(queues(w)), '-d', String(depth)];
}
/** The line a variant is compared with in the "vs ublksrv" column. */
function ublksrvPeer(v: Variant): string {
  if (v.key === 'ublk-null' || v.key === 'nullblk' || v.key === 'ublksrv-null') return 'ublksrv-null';
  if (isNbdVariant(v)) return 'ublksrv-nbd';
  return 'ublksrv-loop';
}
/** What a ublksrv target serves: the raw image, nothing, or the nbdkit export over its unix socket. */
const ublksrvArgs: Record<UblksrvTarget, string[]> = { loop: ['-f', image], null: [], nbd: ['--unix', nbdSocket] };

const pick = <T extends { key: string }>(all: T[], list: string | undefined): T[] => {
  if (list === undefined) return all;
  const keys = list.split(',');
  for (const k of keys) if (!all.some((x) => x.key === k)) throw new Error(`unknown: ${k} (one of ${all.map((x) => x.key).join(', ')})`);
  return all.filter((x) => keys.includes(x.key));
};
const workloads = pick(WORKLOADS, values.workloads);
const variants = pick(VARIANTS, values.variants);
const found = findUblksrv();
/** ublksrv's `ublk`, or '' and why its lines are missing (for the report). */
const UBLKSRV = 'bin' in found ? found.bin : '';
const ublksrvMissing = 'missing' in found ? found.missing : '';
if (UBLKSRV === '') for (let i = variants.length - 1; i >= 0; i--) if (variants[i].ublksrv !== undefined) variants.splice(i, 1);
if (BASELINE === '') for (let i = variants.length - 1; i >= 0; i--) if (variants[i].cli !== undefined) variants.splice(i, 1);

// ---- helpers -----------------------------------------------------------------------

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function ublk(args: string[], cli = UBLK): string {
  return run(process.execPath, [cli, ...args], `ublk ${args.join(' ')}`);
}

/** ublk-ts devices alive now, and the CLI that deletes each. */
const live = new Map<number, string>();
let ublksrvLive = false;
let nbdLive = false;
let knbdLive = false;
function cleanup(): void {
  if (knbdLive) {
    try {
      disconnectKernelNbd(KNBD_DEV);
    } catch {
      /* best effort */
    }
    knbdLive = false;
  }
  if (nbdLive) {
    try {
      sh('qemu-nbd', ['--disconnect', NBD_DEV]);
    } catch {
      /* best effort */
    }
    nbdLive = false;
  }
  if (ublksrvLive) {
    try {
      delUblksrv(UBLKSRV, UBLKSRV_ID);
    } catch {
      /* best effort */
    }
    ublksrvLive = false;
  }
  for (const [id, cli] of live) {
    try {
      ublk(['del', '-n', String(id)], cli);
    } catch {
      /* best effort */
    }
  }
  live.clear();
  if (nbdServer !== null) {
    stopNbdkit(nbdServer);
    nbdServer = null;
  }
  if (loopDev !== '') {
    try {
      sh('losetup', ['-d', loopDev]);
    } catch {
      /* best effort */
    }
    loopDev = '';
  }
  if (nullModule !== '') {
    try {
      sh('modprobe', ['-r', nullModule]);
    } catch {
      /* best effort */
    }
    nullModule = '';
  }
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

interface ProcSample {
  /** clock ticks, all threads */
  utime: number;
  stime: number;
  /** context switches summed over the threads alive now */
  voluntary: number;
  involuntary: number;
}
/** CPU time and context switches of a process (all its threads). */
function procSample(pid: number): ProcSample {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  const r: ProcSample = { utime: Number(f[11]), stime: Number(f[12]), voluntary: 0, involuntary: 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const st = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      r.voluntary += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(st)?.[1] ?? 0);
      r.involuntary += Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(st)?.[1] ?? 0);
    } catch {
      /* the thread ended */
    }
  }
  return r;
}
/** [busy, total] jiffies of all CPUs. */
function cpuTicks(): [number, number] {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = f[3] + f[4];
  return [total - idle, total];
}
const HZ = Number(sh('getconf', ['CLK_TCK']).trim()) || 100;

// ---- one line --------------------------------------------------------------------

/** Per-IO costs of a serving process; the dispatcher counters only for ublk-ts. */
interface PerIo {
  /** io_uring_enter calls of the queue loop per IO (dispatcher "enters") */
  entersPerIo?: number;
  /** blocking waits per IO */
  waitsPerIo?: number;
  /** io_submit calls per IO (AIO engine) */
  submitsPerIo?: number;
  /** ring looks that found completions, per IO (AIO engine) */
  reapsPerIo?: number;
  pollHits?: number;
  pollMisses?: number;
  pollNs?: number;
  eagains?: number;
  /** daemon CPU time (all threads) per IO, µs: in all, in user mode, in the kernel */
  daemonCpuUsPerIo: number;
  daemonUserUsPerIo: number;
  daemonSysUsPerIo: number;
  /** daemon context switches (voluntary + not) per IO: its sleeps and wake-ups */
  ctxSwitchesPerIo: number;
  /** daemon CPU, % of one CPU */
  daemonCpuPct: number;
}

interface Line {
  workload: string;
  variant: string;
  label: string;
  device: string;
  iops: number;
  mbps: number;
  meanUs: number;
  p99Us: number;
  /**
   * Against the kernel loop line of the same workload and round (IOPS, or
   * MB/s for the 128k line); with rounds, the median of the rounds' ratios.
   */
  ratio: number | null;
  /** Every round's IOPS (MB/s for bandwidth workloads), in run order; this line is the median one. */
  runs?: number[];
  /** Every round's ratio to the kernel loop line of that round. */
  ratioRuns?: number[];
  /** Against the ublksrv line of the same workload and round (see ublksrvPeer), median of the rounds. */
  vsUblksrv: number | null;
  vsUblksrvRuns?: number[];
  /** ublk-ts null only: against the kernel null device line of the same workload */
  vsNullBlk?: number;
  /** ublk-ts qcow2 only: against ublk-ts loop aio on the raw image, and against qemu-nbd on the same qcow2 image */
  vsLoop?: number;
  vsNbd?: number;
  /** ublk-ts nbd only: against the kernel nbd client on the same export, median of the rounds */
  vsKnbd?: number;
  vsKnbdRuns?: number[];
  /** guest CPU busy over the run, % of all CPUs */
  cpuBusyPct: number;
  /**
   * Busy CPU time of the whole guest per IO, µs (fio, the server, interrupts,
   * kernel threads): under single-threaded TCG every vCPU shares one host
   * thread, so this is what a line's IOPS is the inverse of once CPU-bound.
   */
  machineUsPerIo: number;
  fioCpuPct: number;
  perIo?: PerIo;
  reapPercentiles?: Record<string, number>;
  stats?: unknown;
}

function setUp(v: Variant, w: Workload): Device {
  if (v.key === 'raw') return { path: image };
  if (v.key === 'qemu-nbd') {
    // O_DIRECT and native AIO, as the ublk-ts targets; qemu-nbd forks once the device is connected.
    sh('qemu-nbd', ['--connect', NBD_DEV, '--format=qcow2', '--cache=none', '--aio=native', qcow2Image]);
    nbdLive = true;
    const pid = Number(readFileSync(`/sys/block/${basename(NBD_DEV)}/pid`, 'utf8').trim());
    return { path: NBD_DEV, nbd: NBD_DEV, pid };
  }
  if (v.key === 'kloop') return { path: loopDev };
  if (v.key === 'knbd') {
    knbdLive = true;
    connectKernelNbd(nbdServer!, KNBD_DEV, queues(w));
    return { path: KNBD_DEV, knbd: KNBD_DEV };
  }
  if (v.key === 'nullblk') return { path: nullDev };
  if (v.ublksrv !== undefined) {
    const d = addUblksrv(UBLKSRV, UBLKSRV_ID, v.ublksrv, [...qd(w), ...ublksrvArgs[v.ublksrv]]);
    ublksrvLive = true;
    return { path: d.path, ublksrvId: d.id, pid: d.pid };
  }
  const cli = v.cli ?? UBLK;
  const d = JSON.parse(ublk(['add', ...v.ublk!(w), '--json'], cli)) as { id: number; blockDevice: string; pid: number };
  live.set(d.id, cli);
  if (!statSync(d.blockDevice).isBlockDevice()) throw new Error(`${d.blockDevice} is not a block device`);
  return { path: d.blockDevice, id: d.id, pid: d.pid, cli };
}

/** Disconnects qemu-nbd and waits until it is gone: the next line opens the same image. */
function disconnectNbd(dev: string, pid: number | undefined): void {
  sh('qemu-nbd', ['--disconnect', dev]);
  nbdLive = false;
  for (let i = 0; i < 600 && pid !== undefined && existsSync(`/proc/${pid}`); i++) sleepSync(0.1);
}

function tearDown(d: Device): void {
  if (d.nbd !== undefined) disconnectNbd(d.nbd, d.pid);
  if (d.knbd !== undefined) {
    disconnectKernelNbd(d.knbd);
    knbdLive = false;
  }
  if (d.ublksrvId !== undefined) {
    delUblksrv(UBLKSRV, d.ublksrvId);
    ublksrvLive = false;
  }
  if (d.id === undefined) return;
  ublk(['del', '-n', String(d.id)], d.cli);
  live.delete(d.id);
}

type Counters = Record<string, number>;
interface StatsJson {
  queues: Counters[];
  total: Counters;
  target: { aio?: (Counters | null)[]; reapPercentiles?: Record<string, number> } | null;
}

/** The serving process's CPU and context switches per IO over one run. */
function processPerIo(p0: ProcSample, p1: ProcSample, ios: number): PerIo {
  const userSeconds = (p1.utime - p0.utime) / HZ;
  const sysSeconds = (p1.stime - p0.stime) / HZ;
  const cpuSeconds = userSeconds + sysSeconds;
  return {
    daemonCpuUsPerIo: (cpuSeconds * 1e6) / ios,
    daemonUserUsPerIo: (userSeconds * 1e6) / ios,
    daemonSysUsPerIo: (sysSeconds * 1e6) / ios,
    ctxSwitchesPerIo: (p1.voluntary - p0.voluntary + p1.involuntary - p0.involuntary) / ios,
    // over the measured run
    daemonCpuPct: (100 * cpuSeconds) / seconds,
  };
}

/** The daemon's counters (`ublk stats --json`) of a ublk-ts device. */
function ublkStats(d: Device): StatsJson {
  return JSON.parse(ublk(['stats', '-n', String(d.id), '--json'], d.cli)) as StatsJson;
}

/** IOs the daemon served, by its own counters. */
const servedIos = (c: Counters): number => c.reads + c.writes + c.flushes;

function runLine(v: Variant, w: Workload): Line {
  const d = setUp(v, w);
  try {
    const target = [`--filename=${d.path}`, '--ioengine=libaio', '--direct=1'];
    // The ramp is a run of its own, so that every counter below (the
    // daemon's, its CPU, the machine's) covers the measured run only: a
    // fresh ublk-ts device spends its first seconds of IO in V8's
    // interpreter and compilers (docs/request-cost.md), which fio's
    // ramp_time would hide from the IOPS but not from the counters.
    if (ramp > 0) runFio(w, target, { seconds: ramp, ramp: 0 });
    const s0 = d.id !== undefined ? ublkStats(d) : null;
    const p0 = d.pid !== undefined ? procSample(d.pid) : null;
    const ios0 = d.ublksrvId !== undefined ? diskIos(d.path) : 0;
    const c0 = cpuTicks();
    const r = runFio(w, target, { seconds, ramp: 0 });
    const c1 = cpuTicks();
    const p1 = d.pid !== undefined ? procSample(d.pid) : null;
    const line: Line = {
      workload: w.key,
      variant: v.key,
      label: v.label,
      device: d.path,
      iops: r.iops,
      mbps: r.mbps,
      meanUs: r.meanUs,
      p99Us: r.p99Us,
      ratio: null,
      vsUblksrv: null,
      cpuBusyPct: (100 * (c1[0] - c0[0])) / Math.max(1, c1[1] - c0[1]),
      machineUsPerIo: (((c1[0] - c0[0]) / HZ) * 1e6) / Math.max(1, r.ios),
      fioCpuPct: r.fioCpuPct,
    };
    if (d.id !== undefined) {
      // Counters of the measured run: after it, less before it. Per-IO
      // figures use the daemon's own count of IOs.
      const s = ublkStats(d);
      const delta = (n: string): number => s.total[n] - s0!.total[n];
      const ios = servedIos(s.total) - servedIos(s0!.total);
      const aio = (st: StatsJson): Counters[] => (st.target?.aio ?? []).filter((q): q is Counters => q !== null);
      const sum = (st: StatsJson, n: string): number => aio(st).reduce((a, q) => a + (q[n] ?? 0), 0);
      const aioDelta = (n: string): number => sum(s, n) - sum(s0!, n);
      line.perIo = {
        entersPerIo: delta('enters') / ios,
        waitsPerIo: delta('waits') / ios,
        pollHits: delta('pollHits'),
        pollMisses: delta('pollMisses'),
        pollNs: delta('pollNs'),
        ...processPerIo(p0!, p1!, ios),
      };
      if (aio(s).length > 0) {
        line.perIo.submitsPerIo = aioDelta('submits') / ios;
        line.perIo.reapsPerIo = aioDelta('reaps') / ios;
        line.perIo.eagains = aioDelta('eagains');
      }
      // The daemon keeps these over the device's life: the ramp run is in them.
      if (v.aio && s.target?.reapPercentiles) line.reapPercentiles = s.target.reapPercentiles;
      line.stats = s;
    }
    // ublksrv has no counters of its own here: the block layer's count of the same window.
    if (d.ublksrvId !== undefined) line.perIo = processPerIo(p0!, p1!, diskIos(d.path) - ios0);
    return line;
  } finally {
    tearDown(d);
  }
}

// ---- the run -------------------------------------------------------------------------

for (const tool of ['fio', 'losetup']) if (!hasTool(tool)) throw new Error(`${tool} is not installed`);
if (!existsSync('/dev/ublk-control')) throw new Error('no /dev/ublk-control: run this where ublk_drv is loaded (tests/vm/ublk-env)');
const kernel = sh('uname', ['-r']).trim();
const backing = sh('findmnt', ['-n', '-o', 'SOURCE,FSTYPE', '--target', image]).trim();

if (variants.some((v) => v.key === 'kloop')) {
  loopDev = sh('losetup', ['--find', '--show', '--direct-io=on', image]).trim();
  loopName = loopDev;
  const dio = readFileSync(`/sys/block/${basename(loopDev)}/loop/dio`, 'utf8').trim();
  if (dio !== '1') throw new Error(`${loopDev}: direct IO did not turn on (dio=${dio})`);
}

/**
 * The kernel null device: the VM loads null_blk (and brd) at boot with their
 * defaults; natively modprobe loads them. Renames the variant after what it found.
 */
function findNullDevice(): string {
  for (const [dev, module, params, label] of [
    ['/dev/nullb0', 'null_blk', [], 'kernel null_blk'],
    ['/dev/ram0', 'brd', ['rd_nr=1', 'rd_size=1048576'], 'kernel brd (RAM)'],
  ] as const) {
    if (!existsSync(dev)) {
      try {
        sh('modprobe', [module, ...params]);
        nullModule = module;
      } catch {
        continue;
      }
    }
    if (existsSync(dev)) {
      VARIANTS.find((v) => v.key === 'nullblk')!.label = label;
      return dev;
    }
  }
  return '';
}
if (variants.some((v) => v.key === 'nullblk')) {
  nullDev = findNullDevice();
  if (nullDev === '') {
    say('no null_blk or brd module: the kernel null line is left out');
    variants.splice(variants.findIndex((v) => v.key === 'nullblk'), 1);
  }
}

/** Variants this run leaves out although they were asked for, and why (for the report). */
const leftOut: string[] = [];
/** Leaves variants out of this run, saying why. */
function dropVariants(keys: string[], reason: string): void {
  say(`${reason}: the ${keys.join(' and ')} lines are left out`);
  const asked = keys.filter((k) => variants.some((v) => v.key === k));
  if (asked.length > 0) leftOut.push(`${asked.join(' and ')} (${reason})`);
  for (const k of asked) variants.splice(variants.findIndex((v) => v.key === k), 1);
}

/** Makes the qcow2 image (every cluster allocated and written), or drops the qcow2 lines and says why. */
function prepareQcow2(): void {
  const why = ['qemu-img', 'qemu-nbd'].find((tool) => !hasTool(tool));
  if (why !== undefined) return dropVariants(['qcow2', 'qemu-nbd'], `no ${why} (qemu-utils)`);
  say(`writing the fully allocated 1 GiB qcow2 image ${qcow2Image}`);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=full', qcow2Image, `${statSync(image).size}`]);
  // qemu-img leaves 1 GiB dirty in the page cache: an O_DIRECT read would first wait for its range's writeback.
  sh('sync', [qcow2Image]);
  if (!existsSync(NBD_DEV)) dropVariants(['qemu-nbd'], `no ${NBD_DEV} (the nbd module)`);
  // qemu-nbd --connect binds its socket in /run/lock, which a fresh /run (the VM's tmpfs) lacks.
  mkdirSync('/run/lock', { recursive: true });
}
if (variants.some((v) => v.key === 'qcow2' || v.key === 'qemu-nbd')) prepareQcow2();

/** Starts the nbdkit memory export and writes it in full, or drops the NBD lines it cannot serve and says why. */
function prepareNbd(): void {
  const none = missingTool('nbdkit', 'tests/vm/setup installs it') || fioNbdMissing();
  if (none !== '') {
    nbdMissing = none;
    return dropVariants(NBD_VARIANTS, none);
  }
  const noKernel = missingTool('nbd-client', 'bench/ublk/setup installs it') || (existsSync(KNBD_DEV) ? '' : `no ${KNBD_DEV} (the nbd module)`);
  if (noKernel !== '' && variants.some((v) => v.key === 'knbd')) {
    nbdMissing = noKernel;
    dropVariants(['knbd'], noKernel);
    if (!variants.some(isNbdVariant)) return;
  }
  const size = statSync(image).size;
  nbdServer = startNbdkit(nbdSocket, size);
  say(`writing the ${(size / 2 ** 30).toFixed(2)} GiB nbdkit memory export in full (fio's nbd engine)`);
  const t = Date.now();
  prefill(nbdServer, size);
  const avail = Number(/^MemAvailable:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
  say(`export written in ${((Date.now() - t) / 1000).toFixed(0)} s; ${(avail / 1024).toFixed(0)} MiB of memory still available`);
}
if (variants.some(isNbdVariant)) prepareNbd();

say(`image ${image} (${(statSync(image).size / 2 ** 30).toFixed(2)} GiB on ${backing}), kernel ${kernel}, ${seconds} s per line after a ${ramp} s ramp run`);
say(`${workloads.length} workloads x ${variants.length} variants`);

// A short warm-up so the first measured line does not pay for cold caches.
if (workloads.length * variants.length > 1) {
  say('warm-up: 3 s of 4k random reads on the image');
  runFio(WORKLOADS.find((w) => w.key === HEADLINE)!, [`--filename=${image}`, '--ioengine=libaio', '--direct=1'], { seconds: 3, ramp: 0 });
}

/** The run whose rate is the median (the lower middle one of an even count). */
const medianRun = (runs: Line[], rate: (l: Line) => number): Line => [...runs].sort((a, b) => rate(a) - rate(b))[Math.floor((runs.length - 1) / 2)];

const lines: Line[] = [];
for (const w of workloads) {
  const rate = (l: Line): number => (w.bandwidth ? l.mbps : l.iops);
  const rounds = w.key === HEADLINE ? headlineRepeat : repeat;
  const here = variants.filter((v) => v.skip?.(w) !== true);
  const byVariant = new Map<string, Line[]>(here.map((v) => [v.key, []]));
  for (let round = 1; round <= rounds; round++) {
    // Even rounds run the lines in reverse (A B C, C B A, …): a line that
    // suffers from following another one, or from a slow drift of the host,
    // does not always get the same neighbour or place.
    for (const v of round % 2 === 1 ? here : [...here].reverse()) {
      const t = Date.now();
      const l = runLine(v, w);
      byVariant.get(v.key)!.push(l);
      say(
        `${w.label}, ${v.label}${rounds > 1 ? ` (round ${round}/${rounds})` : ''}: ${w.bandwidth ? `${l.mbps.toFixed(1)} MB/s` : `${l.iops.toFixed(0)} IOPS`}, ` +
          `mean ${l.meanUs.toFixed(0)} µs, p99 ${l.p99Us.toFixed(0)} µs (${((Date.now() - t) / 1000).toFixed(1)} s)`,
      );
    }
  }
  const refRuns = byVariant.get('kloop');
  const nullRuns = byVariant.get('nullblk');
  for (const v of here) {
    const runs = byVariant.get(v.key)!;
    const l = medianRun(runs, rate);
    if (rounds > 1) l.runs = runs.map(rate);
    if (refRuns !== undefined) {
      l.ratioRuns = runs.map((r, i) => rate(r) / rate(refRuns[i]));
      l.ratio = median(l.ratioRuns);
    }
    const peerRuns = byVariant.get(ublksrvPeer(v));
    if (peerRuns !== undefined) {
      l.vsUblksrvRuns = runs.map((r, i) => rate(r) / rate(peerRuns[i]));
      l.vsUblksrv = median(l.vsUblksrvRuns);
    }
    if (v.key === 'ublk-null' && nullRuns !== undefined) l.vsNullBlk = median(runs.map((r, i) => rate(r) / rate(nullRuns[i])));
    if (v.key === 'qcow2') {
      const loopRuns = byVariant.get('ublk-aio');
      const nbdRuns = byVariant.get('qemu-nbd');
      if (loopRuns !== undefined) l.vsLoop = median(runs.map((r, i) => rate(r) / rate(loopRuns[i])));
      if (nbdRuns !== undefined) l.vsNbd = median(runs.map((r, i) => rate(r) / rate(nbdRuns[i])));
    }
    const knbdRuns = byVariant.get('knbd');
    if (isNbdVariant(v) && v.key !== 'knbd' && knbdRuns !== undefined) {
      l.vsKnbdRuns = runs.map((r, i) => rate(r) / rate(knbdRuns[i]));
      l.vsKnbd = median(l.vsKnbdRuns);
    }
    lines.push(l);
  }
}
cleanup();

const stopRounds = Number(values['stop-rounds']);
let stopTimes: StopTimes | null = null;
if (stopRounds > 0) {
  say(`stopping under load: ${stopRounds} rounds of del, kill -9 and recover`);
  stopTimes = await measureStopTimes(ublk, image, stopRounds);
}

// ---- report ----------------------------------------------------------------------------

const pad = (s: string, n: number): string => s.padEnd(n);
const lpad = (s: string, n: number): string => s.padStart(n);
const wName = (key: string): Workload => WORKLOADS.find((w) => w.key === key)!;
const fmtRate = (l: Line): string => (wName(l.workload).bandwidth ? `${l.mbps.toFixed(1)} MB/s` : `${l.iops.toFixed(0)}`);

const out: string[] = [];
out.push(`ublk-ts bench: fio libaio, O_DIRECT, ${seconds} s per line after a ${ramp} s ramp run on the same device; kernel ${kernel}`);
out.push(`backing image ${image} on ${backing}; kernel loop ${loopName || '-'} (losetup --direct-io=on)`);
out.push(`ublk-ts devices: queue depth ${depth}, 1 queue (2 for the 2-job workload), fresh device per line; poll variant --poll-max-ns ${pollMaxNs}`);
out.push(
  ublksrvMissing === ''
    ? `ublksrv ${UBLKSRV}: same queues and depth, scheduler none like ublk-ts; vs ublksrv: against ublksrv null for the null lines, else ublksrv loop`
    : `no ublksrv lines: ${ublksrvMissing}`,
);
if (leftOut.length > 0) out.push(`left out: ${leftOut.join('; ')}`);
if (BASELINE !== '') {
  let commit = '';
  try {
    commit = ` at ${sh('git', ['-C', BASELINE, 'log', '-1', '--format=%h %s']).trim()}`;
  } catch {
    /* not a git checkout: the directory says enough */
  }
  out.push(`baseline: the ublk-ts in ${BASELINE}${commit}, same rounds`);
}
out.push('');
out.push(`${pad('workload / variant', 34)}${lpad('IOPS|MB/s', 12)}${lpad('mean µs', 10)}${lpad('p99 µs', 10)}${lpad('vs kloop', 10)}${lpad('vs ublksrv', 12)}${lpad('CPU %', 7)}  rounds`);
const fmtRuns = (xs: number[], digits: number): string => xs.map((x) => x.toFixed(digits)).join(' ');
for (const w of workloads) {
  out.push(w.label);
  for (const l of lines.filter((x) => x.workload === w.key)) {
    out.push(
      `  ${pad(l.label, 32)}${lpad(fmtRate(l), 12)}${lpad(l.meanUs.toFixed(0), 10)}${lpad(l.p99Us.toFixed(0), 10)}` +
        `${lpad(l.ratio === null ? '-' : l.ratio.toFixed(2), 10)}${lpad(l.vsUblksrv === null ? '-' : l.vsUblksrv.toFixed(2), 12)}${lpad(l.cpuBusyPct.toFixed(0), 7)}` +
        (l.runs ? `  ${fmtRuns(l.runs, w.bandwidth ? 1 : 0)}${l.variant !== 'kloop' && l.ratioRuns ? ` (${fmtRuns(l.ratioRuns, 2)})` : ''}` : ''),
    );
  }
}
out.push('(CPU %: the whole machine busy during the run, all CPUs. Rounds: each round\'s rate and, in brackets, its ratio to');
out.push('the kernel loop line of the same round; a line with rounds shows its median run and the median of those ratios)');
const qcow2Lines = lines.filter((l) => l.variant === 'qcow2');
if (qcow2Lines.length > 0) {
  out.push('');
  out.push(`ublk-ts qcow2 on ${qcow2Image} (fully allocated, 64 KiB clusters) against ublk-ts loop aio on the raw image and`);
  out.push('qemu-nbd --cache=none --aio=native with the kernel nbd client on the same qcow2 image, same rounds (median of the rounds\' ratios)');
  out.push(`${pad('', 40)}${lpad('vs loop', 9)}${lpad('vs qemu-nbd', 13)}`);
  for (const l of qcow2Lines) {
    const f = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(2));
    out.push(`  ${pad(wName(l.workload).label, 38)}${lpad(f(l.vsLoop), 9)}${lpad(f(l.vsNbd), 13)}`);
  }
}
const nbdLines = lines.filter((l) => l.vsKnbd !== undefined);
if (nbdLines.length > 0) {
  out.push('');
  out.push(`ublk-ts nbd (and ublksrv nbd) against the kernel nbd client (nbd-client over netlink, scheduler none, its queue depth 128),`);
  out.push('all on one nbdkit memory export written in full, one connection per queue, same rounds (median of the rounds\' ratios)');
  for (const l of nbdLines) {
    const name = `${wName(l.workload).label}, ${l.label}`;
    out.push(`  ${pad(name, 52)}${lpad(l.vsKnbd!.toFixed(2), 6)}${l.vsKnbdRuns!.length > 1 ? `  (${fmtRuns(l.vsKnbdRuns!, 2)})` : ''}`);
  }
}
const nullLines = lines.filter((l) => l.vsNullBlk !== undefined);
if (nullLines.length > 0) {
  out.push('');
  out.push(`ublk-ts null against ${VARIANTS.find((v) => v.key === 'nullblk')!.label} (${nullDev}), same fio job: the cost of the trip through userspace`);
  for (const l of nullLines) out.push(`  ${pad(wName(l.workload).label, 40)}${lpad(l.vsNullBlk!.toFixed(2), 6)}`);
}
out.push('');
out.push('per IO: busy CPU µs of the whole guest (all CPUs: fio, server, interrupts), dispatcher loops (enters), blocking waits,');
out.push('io_submit calls, AIO ring reaps that found completions (ublk-ts only), the serving daemon\'s context switches (csw),');
out.push('its CPU µs (all threads; user, kernel) and % of one CPU; poll hits/misses');
out.push(
  `${pad('workload / variant', 34)}${lpad('guest', 7)}${lpad('enters', 8)}${lpad('waits', 8)}${lpad('submits', 9)}${lpad('reaps', 8)}${lpad('csw', 7)}` +
    `${lpad('cpu µs', 8)}${lpad('usr', 6)}${lpad('sys', 6)}${lpad('cpu %', 7)}${lpad('poll h/m', 14)}`,
);
for (const w of workloads) {
  out.push(w.label);
  for (const l of lines.filter((x) => x.workload === w.key)) {
    const guest = `  ${pad(l.label, 32)}${lpad(l.machineUsPerIo.toFixed(0), 7)}`;
    const p = l.perIo;
    if (p === undefined) {
      out.push(guest); // no serving process: the kernel's own drivers
      continue;
    }
    const f = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(2));
    out.push(
      `${guest}${lpad(f(p.entersPerIo), 8)}${lpad(f(p.waitsPerIo), 8)}${lpad(f(p.submitsPerIo), 9)}${lpad(f(p.reapsPerIo), 8)}${lpad(f(p.ctxSwitchesPerIo), 7)}` +
        `${lpad(p.daemonCpuUsPerIo.toFixed(0), 8)}${lpad(p.daemonUserUsPerIo.toFixed(0), 6)}${lpad(p.daemonSysUsPerIo.toFixed(0), 6)}${lpad(p.daemonCpuPct.toFixed(0), 7)}${lpad((p.pollHits ?? 0) + (p.pollMisses ?? 0) > 0 ? `${p.pollHits}/${p.pollMisses}` : '-', 14)}`,
    );
  }
}
out.push('');
out.push('completions per reap, ublk-ts loop AIO engine (percentiles as in seed 000; ramp run included)');
const REAP_LABELS: Record<string, string> = { 'ublk-aio': 'poll off', 'ublk-aio-poll': 'poll on', 'ublk-aio-mqdl': 'mq-deadline', 'ublk-aio-base': 'baseline' };
out.push(`${pad('', 48)}${REAP_PERCENTILES.map((p) => lpad(String(p), 6)).join('')}`);
for (const w of workloads) {
  for (const l of lines.filter((x) => x.workload === w.key && x.reapPercentiles !== undefined)) {
    out.push(`${pad(`${w.label}, ${REAP_LABELS[l.variant] ?? l.label}`, 48)}${REAP_PERCENTILES.map((p) => lpad(String(l.reapPercentiles![String(p)] ?? '-'), 6)).join('')}`);
  }
}
if (stopTimes !== null) {
  out.push('');
  out.push('stopping under fio load, ms (median; each round): the VM tests only bound these against hangs');
  const row = (label: string, xs: number[]) => out.push(`  ${pad(label, 58)}${lpad(median(xs).toFixed(0), 7)}   ${fmtRuns(xs, 0)}`);
  row('ublk del, null device, 2 queues, 2 fio jobs QD32', stopTimes.delUnderLoad);
  row('kill -9 of the daemon until fio ends with an IO error (loop)', stopTimes.killToFioError);
  row('ublk recover until IO completes again (loop, --recoverable)', stopTimes.recoverToIo);
}
const minutes = (Date.now() - started) / 60000;
out.push('');
out.push(`bench time ${minutes.toFixed(1)} min (this program, after the image was written)`);
process.stdout.write(out.join('\n') + '\n');

mkdirSync(dirname(values.out!), { recursive: true });
writeFileSync(
  values.out!,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      kernel,
      mode: process.env.UBLK_ENV_MODE ?? 'unknown',
      image,
      backing,
      seconds,
      ramp,
      depth,
      pollMaxNs,
      repeat,
      headlineRepeat,
      minutes,
      workloads: workloads.map((w) => ({ ...w })),
      lines,
      stopTimes,
    },
    null,
    2,
  ) + '\n',
);
say(`wrote ${values.out}`);

const main = lines.find((l) => l.workload === HEADLINE && l.variant === 'ublk-aio');
const summary = (ratio: number | null | undefined, runs: number[] | undefined, missing: string): string =>
  ratio == null ? `n/a${missing === '' ? '' : ` (${missing})`}` : `${ratio.toFixed(2)}${runs && runs.length > 1 ? ` (median of ${runs.length} rounds: ${fmtRuns(runs, 2)})` : ''}`;
const nbdLine = (key: string): Line | undefined => lines.find((l) => l.workload === key && l.variant === 'ublk-nbd');
const nbd4k = nbdLine(HEADLINE);
const nbd128k = nbdLine('read-128k-qd8');
process.stdout.write(`ublk-ts nbd / kernel nbd 4k randread QD32 IOPS ratio: ${summary(nbd4k?.vsKnbd, nbd4k?.vsKnbdRuns, nbdMissing)}\n`);
process.stdout.write(`ublk-ts nbd / kernel nbd 128k seq read QD8 MB/s ratio: ${summary(nbd128k?.vsKnbd, nbd128k?.vsKnbdRuns, nbdMissing)}\n`);
process.stdout.write(`ublk-ts loop (aio) / ublksrv loop 4k randread QD32 IOPS ratio: ${summary(main?.vsUblksrv, main?.vsUblksrvRuns, ublksrvMissing)}\n`);
process.stdout.write(`ublk-ts loop (aio) / kernel loop 4k randread QD32 IOPS ratio: ${summary(main?.ratio, main?.ratioRuns, '')}\n`);
