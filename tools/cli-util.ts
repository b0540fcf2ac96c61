/** What every command checks and how it fails: one line on stderr, a non-zero exit. */
import { readFileSync, readdirSync } from 'node:fs';
import { UblkControl } from '../ublk/control.js';
import { type DeviceState, readState } from './state.js';

/** ublk_drv ids are minors of a 20-bit space (UBLK_MINORS). */
export const MAX_DEV_ID = (1 << 20) - 1;

/** An error whose message is already the line to print. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

export function isRoot(): boolean {
  return typeof process.getuid !== 'function' || process.getuid() === 0;
}

export function requireRoot(): void {
  if (!isRoot()) throw new CliError('must be run as root (ublk devices need CAP_SYS_ADMIN)');
}

/**
 * Root, or a user acting on a device they added with --unprivileged
 * (listed in the user's own state directory, tools/state.ts). Returns the
 * device's state, or null when there is none (root only).
 */
export function requireRootOrOwnerOf(id: number): DeviceState | null {
  const state = readState(id);
  if (!isRoot() && state?.unprivileged !== true) {
    throw new CliError('must be run as root (ublk devices need CAP_SYS_ADMIN; a user manages only the devices they added with --unprivileged)');
  }
  return state;
}

/**
 * A user with no devices of their own among `ids` has nothing to do: the
 * command ends without opening /dev/ublk-control. Root opens it anyway,
 * and learns there whether ublk_drv is loaded.
 */
export function userHasNone(ids: readonly number[]): boolean {
  return ids.length === 0 && !isRoot();
}

export async function withControl<T>(use: (ctrl: UblkControl) => Promise<T>): Promise<T> {
  const ctrl = UblkControl.open();
  try {
    return await use(ctrl);
  } finally {
    ctrl.close();
  }
}

/** Device ids the kernel knows, from the /dev/ublkc* nodes. */
export function kernelDeviceIds(): number[] {
  return readdirSync('/dev')
    .map((f) => /^ublkc(\d+)$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

export const UBLKS_MAX_PATH = '/sys/module/ublk_drv/parameters/ublks_max';

/**
 * ublk_drv's ublks_max module parameter (default 64), or null when it cannot
 * be read. ublk-ts keeps device ids below it and the count of devices at it.
 */
export function ublksMax(): number | null {
  try {
    const n = Number(readFileSync(UBLKS_MAX_PATH, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}
