/** `ublk list [-n ID] [--json]`: devices as the kernel sees them, with what their daemons recorded. */
import { UblkCommandError } from '../../ublk/control.js';
import { isDaemon, processAlive, readState, stateIds } from '../state.js';
import { UBLK_FEATURE_NAMES } from '../../ublk/uapi.js';
import { CliError, isRoot, kernelDeviceIds, requireRootOrOwnerOf, userHasNone, withControl } from '../cli-util.js';
import { STATE_NAMES, formatSize, table } from '../format.js';
import { savedNames } from '../config-dir.js';

export interface ListedDevice {
  id: number;
  /** The saved device's name, or null. */
  name: string | null;
  state: string;
  queues: number;
  depth: number;
  maxIoSize: number;
  size: number | null;
  pid: number;
  daemonAlive: boolean;
  target: string | null;
  flags: string[];
  blockDevice: string;
  info: Record<string, string | number | boolean>;
  /** Why the device stopped being served, when its daemon recorded a failure. */
  failed: { reason: string; at: string } | null;
}

/** A name per bit set in `flags` (a u64 the kernel fills; bits this build has no name for are `bitN`). */
export function flagNames(flags: number): string[] {
  const names: string[] = [];
  for (let bit = 0, rest = flags; rest > 0; bit++, rest = Math.floor(rest / 2)) {
    if (rest % 2 === 1) names.push(UBLK_FEATURE_NAMES[bit] ?? `bit${bit}`);
  }
  return names;
}

export async function listDevices(only?: number): Promise<ListedDevice[]> {
  // A user sees the devices they added (their own state directory).
  const ids = only !== undefined ? [only] : isRoot() ? kernelDeviceIds() : stateIds();
  if (userHasNone(ids)) return [];
  return withControl(async (ctrl) => {
    const out: ListedDevice[] = [];
    for (const id of ids) {
      let info;
      if (readState(id)?.unprivileged) ctrl.markUnprivileged(id);
      try {
        info = await ctrl.getDevInfo(id);
      } catch (e) {
        if (e instanceof UblkCommandError && e.code === 'ENODEV') {
          if (only !== undefined) throw new CliError(`device ${id} does not exist`);
          continue;
        }
        throw e;
      }
      const state = readState(id);
      const params = await ctrl.getParams(id).catch(() => null);
      const pid = info.ublksrvPid > 0 ? info.ublksrvPid : (state?.pid ?? -1);
      out.push({
        id,
        name: state?.name ?? null,
        state: STATE_NAMES[info.state] ?? String(info.state),
        queues: info.nrHwQueues,
        depth: info.queueDepth,
        maxIoSize: info.maxIoBufBytes,
        size: params?.basic ? params.basic.devSectors * 512 : (state?.size ?? null),
        pid,
        daemonAlive: state !== null && processAlive(state.pid) && isDaemon(state.pid),
        target: state?.target ?? null,
        flags: flagNames(info.flags),
        blockDevice: `/dev/ublkb${id}`,
        info: state?.info ?? {},
        failed: state?.failed ?? null,
      });
    }
    return out;
  });
}

export async function list(o: { number?: number; json?: boolean }): Promise<number> {
  if (o.number !== undefined) requireRootOrOwnerOf(o.number);
  const devices = await listDevices(o.number);
  if (o.json) {
    process.stdout.write(JSON.stringify(devices, null, 2) + '\n');
    return 0;
  }
  // Saved devices that are not up, after the table (all of `ublk list` without -n).
  const down = o.number === undefined ? savedNames().filter((n) => !devices.some((d) => d.name === n)) : [];
  const tail = down.length > 0 ? `saved, not up: ${down.join(', ')} (ublk up NAME)\n` : '';
  if (devices.length === 0) {
    process.stdout.write(tail);
    return 0;
  }
  const rows = [['ID', 'NAME', 'STATE', 'QUEUES', 'DEPTH', 'SIZE', 'PID', 'TARGET', 'BACKING']];
  for (const d of devices) {
    const backing = Object.entries(d.info)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
    rows.push([
      String(d.id),
      d.name ?? '-',
      d.state,
      String(d.queues),
      String(d.depth),
      d.size === null ? '-' : formatSize(d.size),
      d.pid > 0 ? `${d.pid}${d.daemonAlive ? '' : ' (gone)'}` : '-',
      d.target ?? '-',
      backing || '-',
    ]);
  }
  process.stdout.write(table(rows) + '\n');
  for (const d of devices) {
    if (d.failed !== null) process.stdout.write(`device ${d.id} failed at ${d.failed.at}: ${d.failed.reason}\n`);
  }
  process.stdout.write(tail);
  return 0;
}
