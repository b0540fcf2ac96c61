// Issue 8: a daemon killed under IO. Without --recoverable IO fails fast and del cleans up;
// with it, IO waits and `ublk recover` resumes it with nothing lost (fio verify).
import t from 'tap';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { addDevice, background, cleanup, deviceState, fioErrors, processAlive, scratchDir, sh, sleep, snapshot, ublk, waitFor } from '../lib/ublk.js';

t.teardown(cleanup);

function verifyJob(dev: string, extra: string[] = []): string[] {
  return [
    '--output-format=json', '--verify_state_save=0', '--name=crash', `--filename=${dev}`, '--rw=randrw', '--bs=4k',
    '--iodepth=16', '--ioengine=libaio', '--direct=1', '--size=64M', '--verify=crc32c', '--verify_fatal=1', ...extra,
  ];
}

t.test('kill -9 without --recoverable: fio gets errors within 5 s, del cleans up', async (t) => {
  const img = join(scratchDir(), 'death.img');
  sh(`truncate -s 128M ${img}`);
  t.teardown(() => rmSync(img, { force: true }));
  const before = snapshot();
  const dev = addDevice('-t', 'loop', '-f', img, '-q', '2');
  const fio = background('fio', verifyJob(dev.blockDevice, ['--time_based', '--runtime=120']));
  await sleep(3000);
  t.ok(processAlive(fio.pid), 'fio is running');
  process.kill(dev.pid, 'SIGKILL');
  const killedAt = fio.elapsed();
  const r = await fio.done;
  const after = fio.elapsed() - killedAt;
  t.ok(after < 5000, `fio ended ${after} ms after the kill`);
  t.not(r.code, 0, 'fio failed');
  t.ok(fioErrors(r).some((e) => e !== 0), `fio reports errors (${fioErrors(r)})`);
  t.match(ublk('list', '-n', String(dev.id)).stdout, /DEAD/, 'the device is DEAD');
  const del = ublk('del', '-n', String(dev.id));
  t.equal(del.code, 0, del.stderr);
  t.notOk(existsSync(`/dev/ublkc${dev.id}`));
  t.same(snapshot(), before, 'nothing is left');
});

t.test('--recoverable: 5 kill/recover cycles under fio verify, which passes', async (t) => {
  const img = join(scratchDir(), 'recover.img');
  sh(`truncate -s 128M ${img}`);
  t.teardown(() => rmSync(img, { force: true }));
  const before = snapshot();
  const dev = addDevice('-t', 'loop', '-f', img, '-q', '2', '--recoverable');
  const fio = background('fio', verifyJob(dev.blockDevice, ['--time_based', '--runtime=75']));
  for (let cycle = 1; cycle <= 5; cycle++) {
    await sleep(2000);
    const pid = deviceState(dev.id)!.pid;
    process.kill(pid, 'SIGKILL');
    t.ok(await waitFor(() => !processAlive(pid), 5000), `cycle ${cycle}: the daemon is dead`);
    t.ok(await waitFor(() => /QUIESCED/.test(ublk('list', '-n', String(dev.id)).stdout), 10000), `cycle ${cycle}: the device is QUIESCED`);
    const r = ublk('recover', '-n', String(dev.id));
    t.equal(r.code, 0, `cycle ${cycle}: ublk recover ${r.stderr}`);
    t.match(ublk('list', '-n', String(dev.id)).stdout, /LIVE/, `cycle ${cycle}: LIVE again`);
    t.ok(processAlive(fio.pid), `cycle ${cycle}: fio still runs`);
  }
  const r = await fio.done;
  t.equal(r.code, 0, `fio finished: ${r.stderr.slice(-500)}`);
  t.same(fioErrors(r), [0], 'err=0 and verify passed');
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
  t.same(snapshot(), before);
});
