/**
 * The daemon: creates the device, records its state, serves `ublk stats`
 * and stop requests on a unix socket, and on SIGTERM/SIGINT (or `ublk del`)
 * lets in-flight IO complete, then stops and deletes the device.
 */
import { appendFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { type CreateDeviceOptions, type Device, createDevice, recoverDevice } from '../ublk/api.js';
import type { UblkControl } from '../ublk/control.js';
import type { DeviceOptions } from '../ublk/device.js';
import { type TargetDevice, TargetError } from '../target/target.js';
import { withControl } from './cli-util.js';
import { type DeviceState, logPath, readState, removeState, socketPath, stateIds, writeState } from './state.js';
import { describeError } from './errors.js';
import { linkDevice, unlinkDevice } from './dev-links.js';
import { sdNotify } from './sd-notify.js';
import { endSpareWorkers } from '../ublk/spare-workers.js';
import { tuneDaemonJit } from './jit.js';

export interface DaemonOptions extends DeviceOptions {
  /** The target as the user named it (shown by `ublk list`). */
  target: string;
  /** Take over the QUIESCED device `devId` instead of adding one (`ublk recover`). */
  recover?: boolean;
  /** The saved device this is (`ublk up NAME`, `add --save NAME`): recorded, and linked as /dev/disk/by-ublk/NAME. */
  name?: string;
}

export interface DaemonHooks {
  /** The device is live (or creating it failed: error set). Called once. */
  ready(result: { state?: DeviceState; error?: string; warnings?: string[] }): void;
}

export function log(id: number, message: string): void {
  try {
    appendFileSync(logPath(id), `${new Date().toISOString()} ${message}\n`);
  } catch {
    // the run directory is gone: nothing to log to
  }
}

/**
 * Refuses a device that would hold what another ublk-ts device holds
 * exclusively (a backing file), as its state file records. flock alone
 * does not see a --recoverable device whose daemon died, and `ublk
 * recover` will serve that file again.
 */
async function claimExclusive(ctrl: UblkControl, device: TargetDevice, options: DaemonOptions): Promise<void> {
  for (const held of device.exclusive ?? []) {
    const owner = await holder(ctrl, held, options);
    if (owner !== null) throw heldBy(held, owner);
  }
}

function heldBy(held: string, owner: number): TargetError {
  return new TargetError(`${held} is already used by ublk device ${owner}`);
}

/** A target that found its backing held (a live device's lock) says what: name the device that holds it. */
async function nameHolder(e: unknown, options: DaemonOptions): Promise<unknown> {
  if (!(e instanceof TargetError) || e.held === undefined) return e;
  const held = e.held;
  const owner = await withControl((ctrl) => holder(ctrl, held, options)).catch(() => null);
  return owner === null ? e : heldBy(held, owner);
}

/** The device whose state file claims `held` and which the kernel still has, or null. */
async function holder(ctrl: UblkControl, held: string, options: DaemonOptions): Promise<number | null> {
  for (const id of stateIds()) {
    if (options.recover && id === options.devId) continue;
    if (!readState(id)?.exclusive?.includes(held)) continue;
    if (await ctrl.getDevInfo(id).then(() => true, () => false)) return id;
  }
  return null;
}

/** Runs until the device is stopped; resolves with the process exit code. */
export async function runDaemon(options: DaemonOptions, hooks: DaemonHooks): Promise<number> {
  tuneDaemonJit(); // for `--foreground`, where this process is the daemon
  let dev: Device;
  let exclusive: string[] = [];
  try {
    const api: CreateDeviceOptions = {
      target: options.targetModule,
      targetOptions: options.targetOptions,
      id: options.devId,
      queues: options.queues,
      depth: options.depth,
      maxIoSize: options.maxIoSize,
      recoverable: options.recoverable,
      pollMaxNs: options.pollMaxNs,
      scheduler: options.scheduler,
      unprivileged: options.unprivileged,
      onOpen: (device) => {
        exclusive = device.exclusive ?? [];
        return withControl((ctrl) => claimExclusive(ctrl, device, options));
      },
    };
    dev = options.recover ? await recoverDevice({ ...api, id: options.devId }) : await createDevice(api);
  } catch (e) {
    hooks.ready({ error: describeError(await nameHolder(e, options), { devId: options.devId }) });
    return 1;
  } finally {
    endSpareWorkers();
  }
  const id = dev.info.id;
  const state: DeviceState = {
    id,
    ...(options.name === undefined ? {} : { name: options.name }),
    pid: process.pid,
    target: options.target,
    targetModule: options.targetModule,
    targetOptions: options.targetOptions,
    queues: dev.info.queues,
    depth: dev.info.depth,
    maxIoSize: dev.info.maxIoSize,
    recoverable: options.recoverable === true,
    pollMaxNs: options.pollMaxNs ?? 0,
    scheduler: options.scheduler,
    ...(options.unprivileged ? { unprivileged: true } : {}),
    size: dev.info.size,
    info: dev.info.target,
    exclusive,
    created: new Date().toISOString(),
  };

  let exitCode = 0;
  let server: Server | null = null;
  let stopping = false;
  let settle: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (settle = resolve));
  const shutdown = (why: string, code: number) => {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    log(id, `stopping: ${why}`);
    notify(id, ['STOPPING=1', `STATUS=stopping: ${why}`]);
    server?.close();
    dev
      .stop()
      .catch((e: unknown) => {
        log(id, `stop: ${describeError(e, { devId: id })}`);
        exitCode = 1;
      })
      .finally(() => {
        unlinkDevice(id);
        removeState(id);
        settle();
      });
  };
  // The device cannot be served any more: say why in the log and the state
  // file (`ublk list` shows it), stop serving as a dying daemon would, and
  // leave the device for `ublk del` (or `ublk recover`, if it is recoverable).
  const fail = (why: string) => {
    if (stopping) {
      log(id, `while stopping: ${why}`);
      return;
    }
    stopping = true;
    exitCode = 1;
    log(id, `failed: ${why}`);
    server?.close();
    try {
      writeState({ ...state, failed: { reason: why, at: new Date().toISOString() } });
    } catch (e) {
      log(id, `recording the failure: ${describeError(e)}`);
    }
    dev
      .detach()
      .catch((e: unknown) => log(id, `detach: ${describeError(e, { devId: id })}`))
      .finally(settle);
  };
  process.on('SIGTERM', () => shutdown('SIGTERM', 0));
  process.on('SIGINT', () => shutdown('SIGINT', 0));
  process.on('SIGHUP', () => undefined);
  // A bug must not leave a device whose IO hangs: record it, then let the device go.
  process.on('uncaughtException', (e) => {
    log(id, `internal error: ${e.stack ?? e}`);
    fail(`internal error: ${e.message}`);
  });
  void dev.failed.then(fail);

  try {
    writeState(state);
    server = await serveControl(id, dev, (why) => shutdown(why, 0));
    if (options.name !== undefined) linkDevice(options.name, id);
  } catch (e) {
    hooks.ready({ error: describeError(e) });
    shutdown(`setup failed: ${describeError(e)}`, 1);
    await done;
    return 1;
  }
  log(id, `live: pid ${process.pid}, ${state.queues} queue(s) of depth ${state.depth}, target ${options.target}`);
  hooks.ready({ state, warnings: [...dev.warnings] });
  // Only now, with the device LIVE: a unit of Type=notify is started.
  notify(id, ['READY=1', `MAINPID=${process.pid}`, `STATUS=serving /dev/ublkb${id}`]);
  await done;
  return exitCode;
}

/** Tells systemd (when it started us with $NOTIFY_SOCKET); a failure to is logged, the device lives on. */
function notify(id: number, lines: string[]): void {
  try {
    sdNotify(lines);
  } catch (e) {
    log(id, `sd_notify: ${describeError(e)}`);
  }
}

/** One JSON request per connection: {"cmd":"stats"} or {"cmd":"stop"}. */
async function serveControl(id: number, dev: Device, stop: (why: string) => void): Promise<Server> {
  const path = socketPath(id);
  rmSync(path, { force: true });
  const server = createServer((conn) => {
    let input = '';
    conn.setEncoding('utf8');
    conn.on('data', (chunk: string) => {
      input += chunk;
      if (!input.includes('\n')) return;
      let reply: unknown;
      try {
        const req = JSON.parse(input) as { cmd?: string };
        if (req.cmd === 'stats') {
          const st = dev.stats();
          reply = { ok: true, stats: st.queues, latency: st.latency, target: st.target };
        } else if (req.cmd === 'stop') {
          reply = { ok: true };
          setImmediate(() => stop('stop requested'));
        } else reply = { ok: false, error: `unknown request ${JSON.stringify(req.cmd)}` };
      } catch (e) {
        reply = { ok: false, error: (e as Error).message };
      }
      conn.end(JSON.stringify(reply) + '\n');
    });
    conn.on('error', () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (e) => log(id, `control socket: ${e.message}`));
  server.unref();
  return server;
}
