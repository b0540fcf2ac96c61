/**
 * The daemon's state beside the kernel's: /run/ublk-ts/<id>.json (what
 * `ublk recover` needs to start a new daemon, what `ublk list` shows), the
 * control socket <id>.sock and the log <id>.log.
 */
import { lstatSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Root's devices are in /run/ublk-ts; a user's unprivileged ones in the
 * user's own directory ($XDG_RUNTIME_DIR/ublk-ts, else /tmp/ublk-ts-UID),
 * which no one else may write.
 */
export function stateDir(): string {
  if (process.env.UBLK_TS_RUN_DIR) return process.env.UBLK_TS_RUN_DIR;
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return '/run/ublk-ts';
  return process.env.XDG_RUNTIME_DIR ? join(process.env.XDG_RUNTIME_DIR, 'ublk-ts') : `/tmp/ublk-ts-${uid}`;
}

/** Makes the state directory; a user's must be the user's own, not a link someone else left in /tmp. */
function makeStateDir(): void {
  const dir = stateDir();
  const uid = process.getuid?.() ?? 0;
  mkdirSync(dir, { recursive: true, mode: uid === 0 ? 0o755 : 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== uid) throw new Error(`${dir} is not a directory of uid ${uid}: remove it`);
}

export interface DeviceState {
  id: number;
  /** The saved device's name (`ublk up NAME`), when it has one. */
  name?: string;
  /** The daemon serving the device. */
  pid: number;
  /** Target name as given (`loop`, or a module path). */
  target: string;
  targetModule: string;
  targetOptions: Record<string, unknown>;
  queues: number;
  depth: number;
  maxIoSize: number;
  recoverable: boolean;
  pollMaxNs: number;
  scheduler?: string;
  /** Made by a user without CAP_SYS_ADMIN (UBLK_F_UNPRIVILEGED_DEV): its commands carry /dev/ublkcN. */
  unprivileged?: boolean;
  size: number;
  /** What the target reported for `ublk list` (backing file, engine…). */
  info: Record<string, string | number | boolean>;
  /** What the device holds that no other device may (TargetDescription.exclusive). */
  exclusive: string[];
  created: string;
  /** Set when the device could not be served any more: why, and when. The daemon is gone then. */
  failed?: { reason: string; at: string };
}

export function statePath(id: number): string {
  return join(stateDir(), `${id}.json`);
}
export function socketPath(id: number): string {
  return join(stateDir(), `${id}.sock`);
}
export function logPath(id: number): string {
  return join(stateDir(), `${id}.log`);
}

export function writeState(state: DeviceState): void {
  makeStateDir();
  const path = statePath(state.id);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o644 });
  renameSync(tmp, path); // readers see the old file or the new one, never half of one
}

/** The state of device `id`, or null when there is none (or it is unreadable). */
export function readState(id: number): DeviceState | null {
  try {
    return JSON.parse(readFileSync(statePath(id), 'utf8')) as DeviceState;
  } catch {
    return null;
  }
}

export function removeState(id: number): void {
  for (const p of [statePath(id), socketPath(id), logPath(id)]) rmSync(p, { force: true });
}

/** Ids that have a state file. */
export function stateIds(): number[] {
  try {
    return readdirSync(stateDir())
      .map((f) => /^(\d+)\.json$/.exec(f))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
  } catch {
    return [];
  }
}

/** The device the saved device `name` is up as, by its state file, or null. */
export function idOfName(name: string): number | null {
  return stateIds().find((id) => readState(id)?.name === name) ?? null;
}

/** Whether `pid` is a live process (zombies included; signal 0 only checks). */
export function processAlive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether `pid` is a ublk-ts daemon (not a recycled pid of something else). */
export function isDaemon(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('ublk-daemon');
  } catch {
    return false;
  }
}
