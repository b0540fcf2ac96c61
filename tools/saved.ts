/**
 * Saved devices: <config>/devices/NAME.json (config: /etc/ublk-ts) holds the
 * options of `ublk add` under their long names, as the CLI takes them, so
 * that `ublk up NAME` starts the device again, e.g. at boot from
 * ublk-ts@NAME.service. A file is checked when it is saved and again when it
 * is started: a broken one is one line naming the file and the field.
 * (tools/config-dir.ts has the paths and the names.)
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { parseSize } from '../target/size.js';
import { UBLK_MAX_NR_QUEUES, UBLK_MAX_QUEUE_DEPTH } from '../ublk/uapi.js';
import type { DaemonOptions } from './daemon.js';
import type { DeviceState } from './state.js';
import { CliError, MAX_DEV_ID } from './cli-util.js';
import { describeError } from './errors.js';
import { savedDir, savedPath } from './config-dir.js';
import { type AddOptions, daemonOptions } from './commands/add.js';

/** What a saved file holds: `ublk add`'s options without the ones about this run. */
export type SavedDevice = Omit<AddOptions, 'foreground' | 'json' | 'save' | 'unprivileged'>;

/** A name is a file name, a systemd instance name (%i) and a /dev/disk/by-ublk link. */
export function checkName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name)) {
    throw new CliError(`a device name is 1-64 letters, digits, '_', '.' or '-' (not first), not '${name}'`);
  }
}

type Check = (v: unknown) => string | null;
const int =
  (min: number, max: number): Check =>
  (v) =>
    Number.isInteger(v) && (v as number) >= min && (v as number) <= max ? null : `must be an integer between ${min} and ${max}`;
const bool: Check = (v) => (typeof v === 'boolean' ? null : 'must be true or false');
const absolute: Check = (v) => (typeof v === 'string' && isAbsolute(v) ? null : 'must be an absolute path');
const text: Check = (v) => (typeof v === 'string' && v.length > 0 ? null : 'must be a non-empty string');
const size: Check = (v) => {
  if (typeof v !== 'string' && typeof v !== 'number') return 'must be a size such as 4K or 1G';
  try {
    parseSize(v);
    return null;
  } catch (e) {
    return describeError(e);
  }
};

/** Every field a saved device may have, and how it is checked; `type` is required. */
const FIELDS: Record<keyof SavedDevice, Check> = {
  type: text,
  file: absolute,
  size,
  url: text,
  timeout: int(0, 3600),
  reconnect: bool,
  image: text,
  conf: absolute,
  id: text,
  keyring: absolute,
  queues: int(1, UBLK_MAX_NR_QUEUES),
  depth: int(1, UBLK_MAX_QUEUE_DEPTH),
  number: int(-1, MAX_DEV_ID),
  maxIoSize: size,
  engine: (v) => (v === 'aio' || v === 'uring' ? null : "must be 'aio' or 'uring'"),
  readOnly: bool,
  raw: bool,
  pollMaxNs: int(0, 1e9),
  scheduler: text,
  recoverable: bool,
};
const DEFAULTS = { queues: 1, depth: 128, number: -1, maxIoSize: '512K', scheduler: 'none' } as const;

/** Checks a saved device's fields; returns the options `ublk add` would run with. Throws one line naming `where` and the field. */
export function checkSaved(raw: unknown, where: string): DaemonOptions {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new CliError(`${where}: not a JSON object`);
  const o = raw as Record<string, unknown>;
  for (const [k, v] of Object.entries(o)) {
    const check = Object.hasOwn(FIELDS, k) ? FIELDS[k as keyof SavedDevice] : null;
    if (check === null) throw new CliError(`${where}: unknown field '${k}' (fields: ${Object.keys(FIELDS).join(', ')})`);
    const why = check(v);
    if (why !== null) throw new CliError(`${where}: field '${k}' ${why}, not ${JSON.stringify(v)}`);
  }
  if (o.type === undefined) throw new CliError(`${where}: field 'type' is missing`);
  try {
    return daemonOptions({ ...DEFAULTS, ...(o as unknown as SavedDevice) });
  } catch (e) {
    throw new CliError(`${where}: ${describeError(e)}`);
  }
}

/** The saved device NAME as `ublk add` would run it, with its name. */
export function readSaved(name: string): DaemonOptions {
  checkName(name);
  const path = savedPath(name);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new CliError(`no saved device named '${name}' (${path})`);
    throw new CliError(`${path}: ${describeError(e)}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CliError(`${path}: not JSON (${(e as Error).message})`);
  }
  return { ...checkSaved(raw, path), name };
}

/** Writes NAME's file (checked first); relative paths become absolute, as the device resolved them. */
export function writeSaved(name: string, device: SavedDevice): string {
  checkName(name);
  const saved: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(device)) if (v !== undefined && Object.hasOwn(FIELDS, k)) saved[k] = v;
  if (typeof saved.file === 'string') saved.file = resolve(saved.file);
  if (typeof saved.type === 'string' && /[/]|\.js$/.test(saved.type) && !saved.type.startsWith('file:')) saved.type = resolve(saved.type);
  const path = savedPath(name);
  checkSaved(saved, path);
  mkdirSync(savedDir(), { recursive: true, mode: 0o755 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(saved, null, 2) + '\n', { mode: 0o644 });
  renameSync(tmp, path);
  return path;
}

/** The options a running device was made with, as a saved device (its id not pinned). */
export function savedFromState(s: DeviceState): SavedDevice {
  const t = s.targetOptions;
  return {
    type: s.target,
    file: typeof t.file === 'string' ? t.file : undefined,
    size: typeof t.size === 'number' ? t.size : undefined,
    url: typeof t.url === 'string' ? t.url : undefined,
    timeout: typeof t.timeout === 'number' ? t.timeout : undefined,
    reconnect: t.reconnect === true ? true : undefined,
    image: typeof t.image === 'string' ? t.image : undefined,
    conf: typeof t.conf === 'string' ? t.conf : undefined,
    id: typeof t.id === 'string' ? t.id : undefined,
    keyring: typeof t.keyring === 'string' ? t.keyring : undefined,
    engine: typeof t.engine === 'string' ? t.engine : undefined,
    readOnly: t.readOnly === true ? true : undefined,
    raw: t.raw === true ? true : undefined,
    queues: s.queues,
    depth: s.depth,
    number: -1,
    maxIoSize: s.maxIoSize,
    pollMaxNs: s.pollMaxNs,
    scheduler: s.scheduler ?? 'none',
    recoverable: s.recoverable,
  };
}
