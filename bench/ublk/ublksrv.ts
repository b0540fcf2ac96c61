/**
 * The C reference server, ublksrv, as the benchmarks run it: its `ublk` CLI
 * from $UBLK_UBLKSRV (the directory bench/ublksrv/build printed), which
 * execs ublk.loop / ublk.null / ublk.nbd from beside itself and forks the daemon.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

/** The ublksrv targets the bench runs (`ublk add -t TYPE` execs ublk.TYPE). */
export type UblksrvTarget = 'loop' | 'null' | 'nbd';

export interface UblksrvDevice {
  id: number;
  /** /dev/ublkbN */
  path: string;
  /** the daemon that serves it (its queue threads are its tasks) */
  pid: number;
}

/** The `ublk` binary, or why there is none (for the report). */
export function findUblksrv(): { bin: string } | { missing: string } {
  const dir = process.env.UBLK_UBLKSRV;
  if (!dir) return { missing: 'UBLK_UBLKSRV is not set (bench/ublksrv/build failed or was not run)' };
  const bin = join(dir, 'ublk');
  return existsSync(bin) ? { bin } : { missing: `no ${bin}` };
}

export function ublksrv(bin: string, args: string[]): string {
  try {
    return execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string };
    throw new Error(`ublksrv ublk ${args.join(' ')}: ${((err.stderr ?? '') + (err.stdout ?? '')).trim() || err.message}`);
  }
}

/**
 * `ublk add -t TYPE -n ID ...args`: live when it returns. The disk gets the
 * scheduler ublk-ts and the kernel loop driver use (none), so that a
 * comparison is of servers, not of schedulers.
 */
export function addUblksrv(bin: string, id: number, type: UblksrvTarget, args: string[]): UblksrvDevice {
  if (existsSync(`/dev/ublkc${id}`)) throw new Error(`ublksrv: device ${id} exists already`);
  ublksrv(bin, ['add', '-t', type, '-n', String(id), ...args]);
  const pid = Number(/daemon pid (\d+)/.exec(ublksrv(bin, ['list', '-n', String(id)]))?.[1]);
  if (!(pid > 0)) {
    ublksrv(bin, ['del', '-n', String(id)]);
    throw new Error(`ublksrv: no daemon pid for device ${id}`);
  }
  writeFileSync(`/sys/block/ublkb${id}/queue/scheduler`, 'none');
  return { id, path: `/dev/ublkb${id}`, pid };
}

export function delUblksrv(bin: string, id: number): void {
  ublksrv(bin, ['del', '-n', String(id)]);
}

/** The block layer's count of a disk's completed reads and writes. */
export function diskIos(dev: string): number {
  const f = readFileSync(`/sys/block/${basename(dev)}/stat`, 'utf8').trim().split(/\s+/).map(Number);
  return f[0] + f[4];
}
