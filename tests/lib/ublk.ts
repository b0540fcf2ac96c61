/**
 * Helpers for the ublk tests (tests/vm): run the CLI and fio as a user
 * would, and look at what a command left behind (devices, state files,
 * daemons, open file descriptors).
 */
import { spawn, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** The repository (this file is dist/tests/lib/ublk.js). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const BIN = join(ROOT, 'bin/ublk');
export const RUN_DIR = '/run/ublk-ts';

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command as a user's shell would: tap's process tracking puts hooks
 * in NODE_OPTIONS of every child (even when given another env), which would
 * load tap into the CLI and its daemon; `env -u` drops them.
 */
function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): Result {
  const r = spawnSync('env', ['-u', 'NODE_OPTIONS', cmd, ...args], { encoding: 'utf8', timeout: 300_000, ...opts });
  return { code: r.status ?? 128 + 9, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
}

/** `ublk ARGS…` as root. */
export function ublk(...args: string[]): Result {
  return run(process.execPath, [BIN, ...args]);
}

/** `ublk ARGS…` as the user nobody. */
export function ublkAsNobody(...args: string[]): Result {
  return run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, ...args]);
}

export function sh(script: string, opts: SpawnSyncOptions = {}): Result {
  return run('bash', ['-c', script], opts);
}

/** `ublk add … --json`, parsed; throws with the CLI's stderr when it fails. */
export function addDevice(...args: string[]): { id: number; pid: number; blockDevice: string; [k: string]: unknown } {
  const r = ublk('add', ...args, '--json');
  if (r.code !== 0) throw new Error(`ublk add ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as { id: number; pid: number; blockDevice: string };
}

export interface FioResult {
  code: number;
  /** fio's error per job (0: none). */
  errors: number[];
  iops: number;
  output: string;
}

/** fio with JSON output; `args` without the leading dashes' defaults. */
export function fio(args: string[], cwd = '/tmp'): FioResult {
  const r = run('fio', ['--output-format=json', '--verify_state_save=0', ...args], { cwd, timeout: 900_000 });
  try {
    // fio prints its JSON after any "fio: …" warning lines.
    const json = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: { error: number; read: { iops: number }; write: { iops: number } }[] };
    return {
      code: r.code,
      errors: json.jobs.map((j) => j.error),
      iops: json.jobs.reduce((s, j) => s + j.read.iops + j.write.iops, 0),
      output: r.stdout + r.stderr,
    };
  } catch {
    return { code: r.code, errors: [-1], iops: 0, output: r.stdout + r.stderr };
  }
}

/** Pids of running ublk-ts daemons. */
export function daemonPids(): number[] {
  const pids: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes('ublk-daemon')) pids.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Open file descriptors, in any process, on ublk devices. */
export function ublkFds(): string[] {
  const out: string[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${d}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const target = readlinkSync(`/proc/${d}/fd/${fd}`);
        if (/\/dev\/ublk[bc]\d+/.test(target)) out.push(`${d}:${fd} -> ${target}`);
      } catch {
        // closed meanwhile
      }
    }
  }
  return out;
}

/** What exists of ublk: device nodes, state files, daemons. Two snapshots compare with t.same. */
export function snapshot(): { nodes: string[]; states: string[]; daemons: number[] } {
  const nodes = readdirSync('/dev')
    .filter((f) => /^ublk[bc]\d+$/.test(f))
    .sort();
  const states = existsSync(RUN_DIR) ? readdirSync(RUN_DIR).sort() : [];
  return { nodes, states, daemons: daemonPids().sort((a, b) => a - b) };
}

/** Copies a tree of files into `dir` (the project's layers, 20 MiB of random bytes, a deep path); the command's result. */
export function copyTree(dir: string): Result {
  const layers = ['sys', 'aio', 'target', 'ublk', 'tools'].map((d) => join(ROOT, d)).join(' ');
  return sh(`cp -r ${layers} ${dir}/ && head -c 20M /dev/urandom > ${dir}/random.bin && mkdir -p ${dir}/deep/a/b/c && seq 100000 > ${dir}/deep/a/b/c/numbers`);
}

/** sha256sum of every file below `dir`, sorted by name: two listings compare with t.equal. */
export function treeSums(dir: string): string {
  return sh(`cd ${dir} && find . -type f -print0 | sort -z | xargs -0 sha256sum`).stdout;
}

/** The assertions the helpers below make; a tap test has them. */
interface Asserts {
  equal(found: unknown, wanted: unknown, message: string): boolean;
  ok(value: unknown, message: string): boolean;
}

/**
 * What a user does with a new disk: mkfs.ext4 on `dev`, mount it on `mnt`,
 * copy a tree (copyTree), umount, and e2fsck -fn must find it clean. Returns
 * the tree's checksums (treeSums) for checkExt4 after the device came back.
 */
export function fillExt4(t: Asserts, dev: string, mnt: string): string {
  t.equal(sh(`mkfs.ext4 -q -F ${dev}`).code, 0, 'mkfs.ext4');
  t.equal(sh(`mount ${dev} ${mnt}`).code, 0, 'mount');
  const copy = copyTree(mnt);
  t.equal(copy.code, 0, `copy a tree ${copy.stderr}`);
  const sums = treeSums(mnt);
  t.ok(sums.split('\n').length > 20, 'many files were written');
  t.equal(sh(`umount ${mnt}`).code, 0, 'umount');
  const fsck = sh(`e2fsck -fn ${dev}`);
  t.equal(fsck.code, 0, `e2fsck -fn is clean: ${fsck.stdout}${fsck.stderr}`);
  return sums;
}

/** Mounts `dev` read-only on `mnt`: every file fillExt4 wrote has its checksum `sums`. */
export function checkExt4(t: Asserts, dev: string, mnt: string, sums: string): void {
  t.equal(sh(`mount -o ro ${dev} ${mnt}`).code, 0, 'mount again');
  t.equal(treeSums(mnt), sums, 'every file has its checksum');
  t.equal(sh(`umount ${mnt}`).code, 0, 'umount');
}

/** Removes every device (for a test's teardown). */
export function cleanup(): void {
  ublk('del', '-a');
}

export function blockDeviceSize(dev: string): number {
  return Number(sh(`blockdev --getsize64 ${dev}`).stdout.trim());
}

/** A directory on a real filesystem that enforces O_DIRECT rules (the scratch disk), else /tmp. */
export function scratchDir(): string {
  return process.env.UBLK_SCRATCH ?? '/tmp';
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function waitFor(what: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!what()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** A command started in the background, with its output collected. */
export interface Background {
  pid: number;
  done: Promise<Result>;
  /** Milliseconds from start to exit, once done. */
  elapsed(): number;
}

export function background(cmd: string, args: string[], cwd = '/tmp'): Background {
  const child = spawn('env', ['-u', 'NODE_OPTIONS', cmd, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const start = Date.now();
  let end = 0;
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const done = new Promise<Result>((resolve) =>
    child.on('close', (code, signal) => {
      end = Date.now();
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    }),
  );
  return { pid: child.pid ?? -1, done, elapsed: () => (end || Date.now()) - start };
}

/** fio's per-job errors from its JSON output (see fio()). */
export function fioErrors(r: Result): number[] {
  try {
    const json = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: { error: number }[] };
    return json.jobs.map((j) => j.error);
  } catch {
    return [-1];
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * What `p` resolves to, or null once `ms` have passed. The timer ends with
 * `p`: a pending one would hold the test's process open until it fires.
 */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** The state file of device `id`, as the daemon wrote it. */
export function deviceState(id: number): { pid: number; [k: string]: unknown } | null {
  try {
    return JSON.parse(readFileSync(`${RUN_DIR}/${id}.json`, 'utf8')) as { pid: number };
  } catch {
    return null;
  }
}
