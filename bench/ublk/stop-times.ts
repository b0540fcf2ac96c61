/**
 * How long the ways a device stops take, under fio load: `ublk del` (the
 * daemon drains and deletes), the first IO error fio sees after the daemon
 * is killed (no --recoverable), and a `ublk recover` until IO completes
 * again (--recoverable). The VM tests only bound these against hangs; the
 * times themselves belong here, beside the other numbers of a run.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface StopTimes {
  /** ms per round */
  delUnderLoad: number[];
  killToFioError: number[];
  recoverToIo: number[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function completedIos(id: number): number {
  const f = readFileSync(`/sys/block/ublkb${id}/stat`, 'utf8').trim().split(/\s+/).map(Number);
  return f[0] + f[4];
}

async function until(what: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!what()) {
    if (Date.now() > end) throw new Error('gave up waiting (hung?)');
    await sleep(5);
  }
}

/** fio in the background on `dev`, until killed. */
function load(dev: string): { exited: Promise<void>; kill(): void } {
  const child = spawn('fio', ['--name=load', `--filename=${dev}`, '--rw=randrw', '--bs=4k', '--iodepth=32', '--ioengine=libaio', '--direct=1', '--time_based', '--runtime=600', '--numjobs=2'], {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return { exited, kill: () => child.kill('SIGKILL') };
}

/**
 * Measures each time `rounds` times. `ublk(args)` runs the CLI and returns
 * its stdout; `image` is a scratch file for the loop devices (overwritten).
 */
export async function measureStopTimes(ublk: (args: string[]) => string, image: string, rounds: number): Promise<StopTimes> {
  const add = (args: string[]) => JSON.parse(ublk(['add', ...args, '--json'])) as { id: number; pid: number; blockDevice: string };
  const t: StopTimes = { delUnderLoad: [], killToFioError: [], recoverToIo: [] };
  for (let i = 0; i < rounds; i++) {
    const nul = add(['-t', 'null', '-s', '1G', '-q', '2', '-d', '64']);
    const f = load(nul.blockDevice);
    await until(() => completedIos(nul.id) > 10_000, 60_000);
    let start = Date.now();
    ublk(['del', '-n', String(nul.id)]);
    t.delUnderLoad.push(Date.now() - start);
    await f.exited;

    const dead = add(['-t', 'loop', '-f', image, '-q', '2']);
    // One fio job that stops at its first error: its exit is the first error it saw.
    const child = spawn('fio', ['--name=kill', `--filename=${dead.blockDevice}`, '--rw=randread', '--bs=4k', '--iodepth=32', '--ioengine=libaio', '--direct=1', '--time_based', '--runtime=600'], {
      stdio: 'ignore',
    });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    await until(() => completedIos(dead.id) > 2_000, 60_000);
    start = Date.now();
    process.kill(dead.pid, 'SIGKILL');
    await exited;
    t.killToFioError.push(Date.now() - start);
    ublk(['del', '-n', String(dead.id)]);

    const rec = add(['-t', 'loop', '-f', image, '-q', '2', '--recoverable']);
    const g = load(rec.blockDevice);
    await until(() => completedIos(rec.id) > 2_000, 60_000);
    process.kill(rec.pid, 'SIGKILL');
    await until(() => /QUIESCED/.test(ublk(['list', '-n', String(rec.id)])), 60_000);
    start = Date.now();
    ublk(['recover', '-n', String(rec.id)]);
    const ios = completedIos(rec.id);
    await until(() => completedIos(rec.id) > ios, 60_000);
    t.recoverToIo.push(Date.now() - start);
    g.kill();
    await g.exited;
    ublk(['del', '-n', String(rec.id)]);
  }
  execFileSync('sync');
  return t;
}
