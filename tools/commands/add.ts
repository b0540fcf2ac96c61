/** `ublk add`: start a daemon serving a new device; return once it is live. */
import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseSize } from '../../target/size.js';
import { targetModuleUrl } from '../../target/registry.js';
import { type DeviceState, idOfName } from '../state.js';
import { linkPath } from '../dev-links.js';
import type { DaemonOptions } from '../daemon.js';
import { formatSize } from '../format.js';
import { checkName, writeSaved } from '../saved.js';
import { savedPath } from '../config-dir.js';
import { CliError, UBLKS_MAX_PATH, isRoot, kernelDeviceIds, requireRoot, ublksMax, withControl } from '../cli-util.js';

export interface AddOptions {
  type: string;
  size?: string | number;
  file?: string;
  /** NBD server (nbd). */
  url?: string;
  timeout?: number;
  reconnect?: boolean;
  /** Ceph RBD image POOL/IMAGE, configuration, client id and keyring (rbd). */
  image?: string;
  conf?: string;
  id?: string;
  keyring?: string;
  queues: number;
  depth: number;
  number: number;
  maxIoSize: string | number;
  engine?: string;
  readOnly?: boolean;
  raw?: boolean;
  pollMaxNs?: number;
  scheduler: string;
  recoverable?: boolean;
  foreground?: boolean;
  json?: boolean;
  /** Save the options as this name (`ublk up NAME` starts it again). */
  save?: string;
  /** Create the device as this user (UBLK_F_UNPRIVILEGED_DEV). */
  unprivileged?: boolean;
}

const DAEMON = fileURLToPath(new URL('../ublk-daemon.js', import.meta.url));

export function daemonOptions(o: AddOptions): DaemonOptions {
  const maxIoSize = parseSize(o.maxIoSize, 'max IO size');
  if (maxIoSize % 4096 !== 0 || maxIoSize > 32 * 2 ** 20) {
    throw new CliError(`max IO size must be a multiple of 4K between 4K and 32M, not ${o.maxIoSize}`);
  }
  // A name goes into sysfs: nothing that could be a path or a second word.
  if (!/^[a-z0-9_-]{1,32}$/.test(o.scheduler)) throw new CliError(`scheduler must be a name such as none or mq-deadline, not '${o.scheduler}'`);
  const targetOptions: Record<string, unknown> = {};
  if (o.size !== undefined) targetOptions.size = parseSize(o.size);
  if (o.file !== undefined) targetOptions.file = o.file;
  if (o.url !== undefined) targetOptions.url = o.url;
  if (o.timeout !== undefined) targetOptions.timeout = o.timeout;
  if (o.reconnect) targetOptions.reconnect = true;
  if (o.image !== undefined) targetOptions.image = o.image;
  // The daemon and `ublk up` may run elsewhere than here: absolute paths.
  if (o.conf !== undefined) targetOptions.conf = resolve(o.conf);
  if (o.id !== undefined) targetOptions.id = o.id;
  if (o.keyring !== undefined) targetOptions.keyring = resolve(o.keyring);
  if (o.engine !== undefined) targetOptions.engine = o.engine;
  if (o.readOnly) targetOptions.readOnly = true;
  if (o.raw) targetOptions.raw = true;
  return {
    target: o.type,
    targetModule: targetModuleUrl(o.type),
    targetOptions,
    devId: o.number,
    queues: o.queues,
    depth: o.depth,
    maxIoSize,
    recoverable: o.recoverable === true,
    pollMaxNs: o.pollMaxNs ?? 0,
    scheduler: o.scheduler,
    ...(o.unprivileged ? { unprivileged: true } : {}),
  };
}

export function describeDevice(s: DeviceState): Record<string, unknown> {
  return {
    id: s.id,
    ...(s.name === undefined ? {} : { name: s.name, link: linkPath(s.name) }),
    blockDevice: `/dev/ublkb${s.id}`,
    charDevice: `/dev/ublkc${s.id}`,
    state: 'LIVE',
    target: s.target,
    size: s.size,
    queues: s.queues,
    depth: s.depth,
    maxIoSize: s.maxIoSize,
    recoverable: s.recoverable,
    ...(s.unprivileged ? { unprivileged: true } : {}),
    pid: s.pid,
    ...s.info,
  };
}

function printDevice(s: DeviceState, json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify(describeDevice(s)) + '\n');
    return;
  }
  const extra = Object.entries(s.info)
    .map(([k, v]) => `, ${k} ${v}`)
    .join('');
  process.stdout.write(
    `dev id ${s.id}: /dev/ublkb${s.id}${s.name === undefined ? '' : ` (${linkPath(s.name)})`}, target ${s.target}${extra}, size ${formatSize(s.size)}, ` +
      `queues ${s.queues}, depth ${s.depth}, daemon pid ${s.pid}\n`,
  );
}

export async function add(o: AddOptions): Promise<number> {
  const options = daemonOptions(o);
  if (o.unprivileged) {
    // ublk_drv makes root's devices privileged whatever the flag says, and drops recovery from a user's.
    if (isRoot()) throw new CliError("--unprivileged is for users without CAP_SYS_ADMIN (root's devices are privileged)");
    if (o.recoverable) throw new CliError('an --unprivileged device cannot be --recoverable (ublk_drv does not recover them)');
  } else requireRoot();
  if (o.save !== undefined) {
    checkName(o.save);
    if (existsSync(savedPath(o.save))) throw new CliError(`a device named '${o.save}' is saved already (${savedPath(o.save)})`);
    const up = idOfName(o.save);
    if (up !== null) throw new CliError(`device ${up} is named '${o.save}' already`);
    options.name = o.save;
  }
  await checkFree(options);
  if (o.save === undefined) return startDaemon(options, 'add', o.foreground === true, o.json === true);
  // Saved before the device starts (a --foreground add serves until it stops),
  // and taken back when it does not start.
  const path = writeSaved(o.save, o);
  let started = false;
  try {
    return await startDaemon(options, 'add', o.foreground === true, o.json === true, () => (started = true));
  } finally {
    if (!started) rmSync(path, { force: true });
  }
}

/** Refuses, before a daemon starts, a device id that is taken or beyond ublk_drv's limit. */
export async function checkFree(options: DaemonOptions): Promise<void> {
  await withControl(async (ctrl) => {
    const max = ublksMax();
    if (max !== null) {
      if (options.devId >= max) throw new CliError(`device id ${options.devId} is beyond ublk_drv's ublks_max (${max}; see ${UBLKS_MAX_PATH})`);
      if (kernelDeviceIds().length >= max) throw new CliError(`too many ublk devices (see ${UBLKS_MAX_PATH})`);
    }
    if (options.devId < 0) return;
    const exists = await ctrl.getDevInfo(options.devId).then(
      () => true,
      () => false,
    );
    if (exists) throw new CliError(`device ${options.devId} already exists`);
  });
}

/**
 * Runs the daemon for `options` (detached, or in this process with
 * foreground) and prints the device once it is live; shared by add and
 * recover. Returns the exit code.
 */
export async function startDaemon(
  options: DaemonOptions,
  command: string,
  foreground: boolean,
  json: boolean,
  live: () => void = () => undefined,
): Promise<number> {
  const warn = (ws: string[] | undefined) => {
    for (const w of ws ?? []) process.stderr.write(`ublk: ${command}: warning: ${w}\n`);
  };
  if (foreground) {
    // Only a foreground add or recover serves the device from this process.
    const { runDaemon } = await import('../daemon.js');
    return runDaemon(options, {
      ready: (r) => {
        warn(r.warnings);
        if (r.state) {
          live();
          printDevice(r.state, json);
        } else process.stderr.write(`ublk: ${command}: ${r.error}\n`);
      },
    });
  }
  const child = spawn(process.execPath, [DAEMON, JSON.stringify(options)], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const line = await firstLine(child.stdio[3] as Readable);
  let result: { state?: DeviceState; error?: string; warnings?: string[] } = {};
  try {
    if (line) result = JSON.parse(line) as typeof result;
  } catch {
    result = { error: `the daemon said something unexpected: ${line}` };
  }
  warn(result.warnings);
  if (result.state) {
    live();
    (child.stdio[3] as Readable).destroy();
    child.unref();
    printDevice(result.state, json);
    return 0;
  }
  const code = await exited;
  throw new CliError(result.error ?? `the daemon exited (code ${code}) before the device was live`);
}

function firstLine(stream: Readable): Promise<string | null> {
  return new Promise((resolve) => {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(buf.slice(0, nl));
    });
    stream.on('end', () => resolve(buf.length > 0 ? buf : null));
    stream.on('error', () => resolve(null));
  });
}

