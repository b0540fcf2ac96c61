/** `ublk install-units [--dir DIR]`: the systemd template unit ublk-ts@NAME.service for saved devices. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireRoot } from '../cli-util.js';

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
