/**
 * /dev/disk/by-ublk/NAME → ../../ublkbN for saved devices, so that fstab and
 * units can name a device whose id is whatever was free when it came up.
 * The daemon makes the link once the device is live and removes it when it
 * deletes the device; `ublk del` removes what a dead daemon left.
 */
import { mkdirSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';

export function linkDir(): string {
  return process.env.UBLK_TS_LINK_DIR ?? '/dev/disk/by-ublk';
}

export function linkPath(name: string): string {
  return join(linkDir(), name);
}

/** Points NAME at /dev/ublkbID, replacing an old link in one rename. */
export function linkDevice(name: string, id: number): void {
  mkdirSync(linkDir(), { recursive: true, mode: 0o755 });
  const tmp = join(linkDir(), `.${name}.${process.pid}`);
  rmSync(tmp, { force: true });
  symlinkSync(`../../ublkb${id}`, tmp);
  renameSync(tmp, linkPath(name));
}

/** Removes every link that points at /dev/ublkbID. */
export function unlinkDevice(id: number): void {
  let names: string[];
  try {
    names = readdirSync(linkDir());
  } catch {
    return;
  }
  for (const n of names) {
    try {
      if (readlinkSync(join(linkDir(), n)) === `../../ublkb${id}`) rmSync(join(linkDir(), n), { force: true });
    } catch {
      // not a link, or gone meanwhile
    }
  }
}
