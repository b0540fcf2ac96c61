/** fio in the benches: the workloads they measure, one timed line, what it measured. */
import { execFileSync } from 'node:child_process';

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
  const out = execFileSync('fio', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env });
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
