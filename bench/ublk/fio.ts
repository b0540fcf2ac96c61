/** fio in the benches: the workloads they measure, one timed line, what it measured. */
import { execFileSync, spawn } from 'node:child_process';

export interface Workload {
  key: string;
  label: string;
  rw: 'randread' | 'randwrite' | 'read';
  bs: string;
  qd: number;
  /** fio jobs, reported as one group */
  jobs: number;
  /** MB/s instead of IOPS */
  bandwidth: boolean;
}

/** What one fio line measured, on the side (read or write) its workload does. */
export interface Fio {
  iops: number;
  mbps: number;
  ios: number;
  meanUs: number;
  p99Us: number;
  fioCpuPct: number;
}

/** How long a line runs: `seconds` measured after `ramp` seconds not counted. */
export interface LineTime {
  seconds: number;
  ramp: number;
}

/** How long past its time fio may run before stallReport speaks. */
const STALL_GRACE_S = 120;

/**
 * A line that never ends (fio waiting on an IO that never completes) holds
 * the bench until the VM's timeout, and its last console lines rarely say
 * on what. So a shell started beside fio waits `afterS` seconds and, if it
 * is still alive (fio has not returned: the caller kills it then), prints
 * to stderr the requests each disk has in flight, the tasks and where they
 * wait (fio waits for AIO interruptibly, so sysrq w alone does not show
 * it), the tasks blocked in the kernel (sysrq w) and the end of the kernel
 * log. It only reports; fio is left to finish or to the timeout.
 */
function stallReport(afterS: number, what: string): { stop(): void } {
  const script = [
    `sleep ${afterS}`,
    `echo "bench: $1 is still running ${STALL_GRACE_S} s after its time; requests in flight per disk, tasks, blocked tasks (sysrq w), the kernel log:"`,
    'grep -H . /sys/block/*/inflight',
    "ps -eo pid,stat,wchan:32,comm | awk '$2 !~ /^I/'",
    '[ -w /proc/sysrq-trigger ] && echo w > /proc/sysrq-trigger',
    'dmesg | tail -n 100',
  ].join('; ');
  // Its own process group, so that stop() ends the sleep with the shell.
  const sh = spawn('sh', ['-c', script, 'sh', what], { stdio: ['ignore', 2, 2], detached: true });
  return {
    stop: () => {
      try {
        process.kill(-sh.pid!, 'SIGKILL');
      } catch {
        // it reported and ended already
      }
    },
  };
}

/**
 * Runs one timed line of `w` on `target` (fio's options saying where: a
 * --filename and --ioengine, or an engine's own options), fio started with
 * `env`. Throws when fio reports an error or moved no bytes.
 */
export function runFio(w: Workload, target: string[], time: LineTime, env: NodeJS.ProcessEnv = process.env): Fio {
  const args = [
    `--name=${w.key}`,
    ...target,
    `--rw=${w.rw}`,
    `--bs=${w.bs}`,
    `--iodepth=${w.qd}`,
    `--numjobs=${w.jobs}`,
    '--group_reporting=1',
    '--time_based=1',
    `--runtime=${time.seconds}`,
    `--ramp_time=${time.ramp}`,
    '--norandommap=1',
    '--randrepeat=0',
    '--output-format=json',
  ];
  const watchdog = stallReport(time.seconds + time.ramp + STALL_GRACE_S, `fio ${w.key} ${target.join(' ')}`);
  let out: string;
  try {
    out = execFileSync('fio', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env });
  } finally {
    watchdog.stop();
  }
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  const dir = w.rw === 'randwrite' ? job.write : job.read;
  if (job.error !== 0 || dir.io_bytes === 0) throw new Error(`fio ${w.key} ${target.join(' ')}: error ${job.error}, ${dir.io_bytes} bytes`);
  return {
    iops: dir.iops,
    mbps: dir.bw_bytes / 1e6,
    ios: dir.total_ios,
    meanUs: dir.clat_ns.mean / 1000,
    p99Us: (dir.clat_ns.percentile?.['99.000000'] ?? NaN) / 1000,
    fioCpuPct: job.usr_cpu + job.sys_cpu,
  };
}

/** The rate a workload is judged by: MB/s for bandwidth workloads, else IOPS. */
export const rateOf = (f: Fio, w: Workload): number => (w.bandwidth ? f.mbps : f.iops);

/** The middle value; of an even count, the mean of the two middle ones. */
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
