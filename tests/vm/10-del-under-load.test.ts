// Issue 8: `ublk del` while fio runs: fio gets errors, nothing hangs, nothing is left.
import t from 'tap';
import { addDevice, background, cleanup, fioErrors, sleep, snapshot, ublk, ublkFds } from '../lib/ublk.js';

t.teardown(cleanup);

t.test('del under fio load, 10 times, each under 10 s', async (t) => {
  const before = snapshot();
  for (let i = 0; i < 10; i++) {
    const dev = addDevice('-t', 'null', '-s', '512M', '-q', '2', '-d', '64');
    const fio = background('fio', [
      '--output-format=json', '--name=load', `--filename=${dev.blockDevice}`, '--rw=randrw', '--bs=4k', '--iodepth=32',
      '--ioengine=libaio', '--direct=1', '--time_based', '--runtime=60', '--numjobs=2',
    ]);
    await sleep(1500);
    const start = Date.now();
    const del = ublk('del', '-n', String(dev.id));
    const took = Date.now() - start;
    t.equal(del.code, 0, `round ${i}: del ${del.stderr}`);
    t.ok(took < 10000, `round ${i}: del took ${took} ms`);
    const r = await fio.done;
    t.ok(fioErrors(r).some((e) => e !== 0), `round ${i}: fio saw errors (${fioErrors(r)})`);
  }
  t.same(snapshot(), before, 'no device, state file or daemon left');
  t.same(ublkFds(), []);
});
