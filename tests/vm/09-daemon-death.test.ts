// Issue 8: a daemon killed under IO. Without --recoverable IO fails and del
// cleans up; with it, IO waits, and `ublk recover` resumes it with nothing
// lost (fio verify). What is asserted is what a user sees — errors, IO that
// resumes, data that verifies — never how fast: a loaded machine may be slow,
// and the times go to the benchmark (make bench-ublk).
import t from 'tap';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { addDevice, background, deviceState, fioErrors, processAlive, scratchDir, sh, sleep, snapshot, ublk, waitFor, within } from '../lib/ublk.js';

t.teardown(() => ublk('del', '-a'));

/** A hang bound, not a speed target: far beyond what a loaded 2-core machine needs. */
const HANG_MS = 120_000;

function verifyJob(dev: string, extra: string[] = []): string[] {
  return [
    '--output-format=json', '--verify_state_save=0', '--name=crash', `--filename=${dev}`, '--rw=randrw', '--bs=4k',
    '--iodepth=16', '--ioengine=libaio', '--direct=1', '--size=32M', '--verify=crc32c', '--verify_fatal=1', ...extra,
  ];
}

/** Reads and writes the kernel completed on /dev/ublkbN (its stat file), or -1 without one. */
function completedIos(id: number): number {
  try {
    const f = readFileSync(`/sys/block/ublkb${id}/stat`, 'utf8').trim().split(/\s+/).map(Number);
    return f[0] + f[4];
  } catch {
    return -1;
  }
}

t.test('kill -9 without --recoverable: fio gets errors, the device is DEAD, del cleans up', async (t) => {
  const img = join(scratchDir(), 'death.img');
  sh(`truncate -s 128M ${img}`);
  t.teardown(() => rmSync(img, { force: true }));
  const before = snapshot();
  const dev = addDevice('-t', 'loop', '-f', img, '-q', '2');
  const fio = background('fio', verifyJob(dev.blockDevice, ['--time_based', '--runtime=900']));
  const start = completedIos(dev.id);
  t.ok(await waitFor(() => completedIos(dev.id) > start + 100, HANG_MS), 'fio is doing IO');
  process.kill(dev.pid, 'SIGKILL');
  const killedAt = fio.elapsed();
  const ended = (await within(fio.done, HANG_MS)) !== null;
  t.ok(ended, `fio ended ${fio.elapsed() - killedAt} ms after the kill`);
  if (!ended) process.kill(fio.pid, 'SIGKILL');
  const r = await fio.done;
  t.not(r.code, 0, 'fio failed');
  t.ok(fioErrors(r).some((e) => e !== 0), `fio reports errors (${fioErrors(r)})`);
  t.match(ublk('list', '-n', String(dev.id)).stdout, /DEAD/, 'the device is DEAD');
  const del = ublk('del', '-n', String(dev.id));
  t.equal(del.code, 0, del.stderr);
  t.notOk(existsSync(`/dev/ublkc${dev.id}`));
  t.same(snapshot(), before, 'nothing is left');
});

t.test('--recoverable: 5 kill/recover cycles under fio verify; IO resumes after each, and verify passes', async (t) => {
  const img = join(scratchDir(), 'recover.img');
  const stop = join(scratchDir(), 'recover.stop');
  sh(`truncate -s 128M ${img}`);
  t.teardown(() => rmSync(img, { force: true }));
  t.teardown(() => rmSync(stop, { force: true }));
  const before = snapshot();
  const dev = addDevice('-t', 'loop', '-f', img, '-q', '2', '--recoverable');
  // fio write-and-verify passes, one after another until told to stop: however
  // slow the machine, IO is running during every kill, and every pass verifies.
  const job = verifyJob(dev.blockDevice).map((a) => `'${a}'`).join(' ');
  const load = background('bash', ['-c', `n=0; until [ -e ${stop} ]; do fio ${job} >/tmp/recover-fio.json || { cat /tmp/recover-fio.json; exit 1; }; n=$((n+1)); done; echo "passes=$n"`]);
  for (let cycle = 1; cycle <= 5; cycle++) {
    const ios = completedIos(dev.id);
    t.ok(await waitFor(() => completedIos(dev.id) > ios + 100, HANG_MS), `cycle ${cycle}: IO runs`);
    const pid = deviceState(dev.id)!.pid;
    process.kill(pid, 'SIGKILL');
    t.ok(await waitFor(() => !processAlive(pid), HANG_MS), `cycle ${cycle}: the daemon is dead`);
    t.ok(await waitFor(() => /QUIESCED/.test(ublk('list', '-n', String(dev.id)).stdout), HANG_MS), `cycle ${cycle}: the device is QUIESCED`);
    t.ok(processAlive(load.pid), `cycle ${cycle}: the workload waits, it did not fail`);
    const r = ublk('recover', '-n', String(dev.id));
    t.equal(r.code, 0, `cycle ${cycle}: ublk recover ${r.stderr}`);
    t.match(ublk('list', '-n', String(dev.id)).stdout, /LIVE/, `cycle ${cycle}: LIVE again`);
    const resumed = completedIos(dev.id);
    t.ok(await waitFor(() => completedIos(dev.id) > resumed, HANG_MS), `cycle ${cycle}: IO resumes`);
  }
  sh(`touch ${stop}`);
  const r = await load.done;
  t.equal(r.code, 0, `every fio pass verified: ${r.stdout.slice(-1500)}${r.stderr.slice(-500)}`);
  t.match(r.stdout, /passes=[1-9]/, 'at least one whole pass ran');
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
  t.same(snapshot(), before);
});
