/**
 * What ublk-ts installs into the system: `ublk install-units` (the systemd
 * template unit ublk-ts@NAME.service for saved devices) and `ublk
 * install-udev-rules` (the rule that hands unprivileged devices to their
 * owners), and the handover that rule runs.
 */
import { chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UBLK_F_UNPRIVILEGED_DEV } from '../../ublk/uapi.js';
import { CliError, requireRoot, withControl } from '../cli-util.js';

const BIN = fileURLToPath(new URL('../../../bin/ublk', import.meta.url));

/**
 * The unit: Type=notify, so systemd counts it started when the daemon says
 * READY=1, which it does once the device is LIVE; `systemctl stop` is a
 * SIGTERM, on which the daemon lets in-flight IO complete and deletes the
 * device. The command names this installation's node and CLI by absolute
 * path (a unit has no PATH of the user's).
 */
export function unitText(node = process.execPath, bin = BIN): string {
  return `# ublk-ts saved device %i: /dev/disk/by-ublk/%i (made by ublk install-units)
[Unit]
Description=ublk-ts block device %i
After=systemd-modules-load.service local-fs.target
Wants=systemd-modules-load.service

[Service]
Type=notify
NotifyAccess=main
ExecStartPre=-/sbin/modprobe ublk_drv
ExecStart=${node} ${bin} up %i --foreground
KillMode=mixed
TimeoutStopSec=90

[Install]
WantedBy=multi-user.target
`;
}

export async function installUnits(o: { dir: string }): Promise<number> {
  requireRoot();
  mkdirSync(o.dir, { recursive: true });
  const path = join(o.dir, 'ublk-ts@.service');
  writeFileSync(path, unitText(), { mode: 0o644 });
  process.stdout.write(`wrote ${path}\nthen: systemctl daemon-reload && systemctl enable --now ublk-ts@NAME (NAME: a device saved with 'ublk add --save NAME')\n`);
  return 0;
}

/**
 * The udev rule for unprivileged devices, as ublksrv ships one: users may
 * open /dev/ublk-control (ublk_drv lets them add only unprivileged
 * devices), and each new /dev/ublkcN and /dev/ublkbN of an unprivileged
 * device is given to the user who added it.
 */
export function udevRulesText(node = process.execPath, bin = BIN): string {
  return `# ublk-ts: unprivileged ublk devices (ublk add --unprivileged); made by ublk install-udev-rules
KERNEL=="ublk-control", MODE="0666", OPTIONS+="static_node=ublk-control"
ACTION=="add", KERNEL=="ublk[bc][0-9]*", RUN+="${node} ${bin} udev-handover %k"
`;
}

export async function installUdevRules(o: { dir: string }): Promise<number> {
  requireRoot();
  mkdirSync(o.dir, { recursive: true });
  const path = join(o.dir, '99-ublk-ts.rules');
  writeFileSync(path, udevRulesText(), { mode: 0o644 });
  process.stdout.write(`wrote ${path}\nthen: udevadm control --reload && udevadm trigger --name-match=ublk-control\n`);
  return 0;
}

/**
 * The rule's RUN for /dev/ublkcN and /dev/ublkbN: when device N is
 * unprivileged, its nodes go to the uid and gid ublk_drv recorded as its
 * owner (mode 0600 and 0660 stay); root's devices are left as they are.
 */
export async function udevHandover(o: { name: string }): Promise<number> {
  requireRoot();
  const m = /^ublk[bc](\d+)$/.exec(o.name);
  if (m === null) throw new CliError(`not a ublk device node: '${o.name}'`);
  const info = await withControl((ctrl) => ctrl.getDevInfo(Number(m[1])));
  if (info.flags & UBLK_F_UNPRIVILEGED_DEV) chownSync(`/dev/${o.name}`, info.ownerUid, info.ownerGid);
  return 0;
}
