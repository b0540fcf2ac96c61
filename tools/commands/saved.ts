/**
 * Saved devices: `ublk save -n ID NAME`, `ublk up NAME… | --all`,
 * `ublk down NAME… | --all` (tools/saved.ts has the files, tools/config-dir.ts their paths).
 */
import { UblkCommandError } from '../../ublk/control.js';
import { idOfName, isDaemon, processAlive, readState, writeState } from '../state.js';
import { CliError, requireRoot, withControl } from '../cli-util.js';
import { describeError } from '../errors.js';
import { linkDevice, linkPath } from '../dev-links.js';
import { checkName, readSaved, savedFromState, writeSaved } from '../saved.js';
import { savedNames, savedPath } from '../config-dir.js';
import { checkFree, startDaemon } from './add.js';
import { deleteDevice } from './del.js';
import { existsSync } from 'node:fs';

export async function save(o: { number: number; name: string; force?: boolean }): Promise<number> {
  checkName(o.name);
  requireRoot();
  const state = readState(o.number);
  if (state === null) throw new CliError(`device ${o.number} is not served by ublk-ts`);
  const other = idOfName(o.name);
  if (other !== null && other !== o.number) throw new CliError(`device ${other} is named '${o.name}' already`);
  if (!o.force && existsSync(savedPath(o.name))) throw new CliError(`a device named '${o.name}' is saved already (${savedPath(o.name)}; --force replaces it)`);
  const path = writeSaved(o.name, savedFromState(state));
  // The running device takes the name now: `ublk down NAME` and the link find it.
  writeState({ ...state, name: o.name });
  linkDevice(o.name, o.number);
  process.stdout.write(`device ${o.number} saved as '${o.name}' (${path}), linked as ${linkPath(o.name)}\n`);
  return 0;
}

/** Whether the kernel has device `id`. */
async function kernelHas(id: number): Promise<boolean> {
  return withControl((ctrl) =>
    ctrl.getDevInfo(id).then(
      () => true,
      (e: unknown) => {
        if (e instanceof UblkCommandError && e.code === 'ENODEV') return false;
        throw e;
      },
    ),
  );
}

/** Starts one saved device; returns the exit code. A device that is up already is left as it is. */
async function upOne(name: string, foreground: boolean, json: boolean): Promise<number> {
  const options = readSaved(name);
  const id = idOfName(name);
  if (id !== null) {
    const state = readState(id)!;
    if (await kernelHas(id)) {
      if (processAlive(state.pid) && isDaemon(state.pid)) {
        if (foreground) throw new CliError(`'${name}' is up already as /dev/ublkb${id} (daemon pid ${state.pid})`);
        process.stdout.write(`'${name}' is up already as /dev/ublkb${id}\n`);
        return 0;
      }
      // The daemon died and left the device: a recoverable one gets a new daemon.
      if (!state.recoverable) throw new CliError(`'${name}' is device ${id}, whose daemon is gone: 'ublk del -n ${id}' first`);
      const { recover } = await import('./recover.js');
      return recover({ number: id, foreground, json });
    }
    // The kernel no longer has it: the state (and any link) is stale.
    await withControl((ctrl) => deleteDevice(ctrl, id));
  }
  await checkFree(options);
  return startDaemon(options, 'up', foreground, json);
}

export async function up(o: { names: string[]; all?: boolean; foreground?: boolean; json?: boolean }): Promise<number> {
  const names = o.all ? savedNames() : o.names;
  if (!o.all && names.length === 0) throw new CliError('say which saved devices: NAME…, or --all');
  if (o.all && o.names.length > 0) throw new CliError('give names or --all, not both');
  if (o.foreground && names.length !== 1) throw new CliError('--foreground serves one device: name one');
  for (const n of names) checkName(n);
  requireRoot();
  if (names.length === 1) return upOne(names[0], o.foreground === true, o.json === true);
  // --all and lists: every device is tried; each failure is its own line.
  let code = 0;
  for (const n of names) {
    try {
      code = Math.max(code, await upOne(n, false, o.json === true));
    } catch (e) {
      process.stderr.write(`ublk: up: ${n}: ${describeError(e)}\n`);
      code = 1;
    }
  }
  return code;
}

export async function down(o: { names: string[]; all?: boolean }): Promise<number> {
  if (!o.all && o.names.length === 0) throw new CliError('say which saved devices: NAME…, or --all');
  if (o.all && o.names.length > 0) throw new CliError('give names or --all, not both');
  for (const n of o.names) checkName(n);
  requireRoot();
  const names = o.all ? savedNames() : o.names;
  return withControl(async (ctrl) => {
    for (const n of names) {
      const id = idOfName(n);
      if (id !== null) await deleteDevice(ctrl, id);
      else if (!existsSync(savedPath(n))) throw new CliError(`no device named '${n}'`);
    }
    return 0;
  });
}
