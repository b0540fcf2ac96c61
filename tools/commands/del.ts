/** `ublk del -n ID | -a`: stop and delete devices, through their daemon when it lives. */
import { UblkCommandError, type UblkControl } from '../../ublk/control.js';
import { isDaemon, processAlive, readState, removeState, stateIds } from '../state.js';
import { unlinkDevice } from '../dev-links.js';
import { CliError, isRoot, kernelDeviceIds, requireRootOrOwnerOf, userHasNone, withControl } from '../cli-util.js';

export async function del(o: { number?: number; all?: boolean }): Promise<number> {
  if (o.number === undefined && !o.all) throw new CliError('say which device: -n ID, or -a for all');
  // A user deletes the devices they added (their own state directory).
  if (!o.all) requireRootOrOwnerOf(o.number!);
  const known = isRoot() ? kernelDeviceIds() : [];
  const ids = o.all ? [...new Set([...known, ...stateIds()])].sort((a, b) => a - b) : [o.number!];
  if (userHasNone(ids)) return 0;
  return withControl(async (ctrl) => {
    for (const id of ids) await deleteDevice(ctrl, id);
    return 0;
  });
}

async function exists(ctrl: UblkControl, id: number): Promise<boolean> {
  try {
    await ctrl.getDevInfo(id);
    return true;
  } catch (e) {
    if (e instanceof UblkCommandError && e.code === 'ENODEV') return false;
    throw e;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (processAlive(pid)) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

export async function deleteDevice(ctrl: UblkControl, id: number): Promise<void> {
  const state = readState(id);
  if (state?.unprivileged) ctrl.markUnprivileged(id);
  if (!(await exists(ctrl, id))) {
    if (state === null) throw new CliError(`device ${id} does not exist`);
    // The kernel has no such device: the state is stale, and so is any daemon.
    if (processAlive(state.pid) && isDaemon(state.pid)) process.kill(state.pid, 'SIGKILL');
    unlinkDevice(id);
    removeState(id);
    return;
  }
  if (state !== null && processAlive(state.pid) && isDaemon(state.pid)) {
    // The daemon lets in-flight IO complete, stops and deletes the device.
    process.kill(state.pid, 'SIGTERM');
    if (!(await waitGone(state.pid, 30_000))) {
      process.kill(state.pid, 'SIGKILL');
      await waitGone(state.pid, 5_000);
    }
  }
  // A daemon that died (or never was ours) left the device behind.
  if (await exists(ctrl, id)) {
    await ctrl.stopDev(id).catch(() => undefined);
    await ctrl.delDev(id);
  }
  unlinkDevice(id); // what a dead daemon left
  removeState(id);
}
