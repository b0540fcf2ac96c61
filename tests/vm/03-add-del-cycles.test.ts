// Issue 4 acceptance: 20 cycles of add / 1 s of fio / del leave nothing behind.
import t from 'tap';
import { addDevice, cleanup, fio, snapshot, ublk, ublkFds } from '../lib/ublk.js';

t.teardown(cleanup);

t.test('20 add / fio / del cycles leave no device, daemon or open fd', async (t) => {
  const before = snapshot();
  let failures = 0;
  for (let i = 0; i < 20; i++) {
    const dev = addDevice('-t', 'null', '-s', '256M', '-q', '2', '-d', '32');
    const r = fio(['--name=c', `--filename=${dev.blockDevice}`, '--rw=randrw', '--bs=4k', '--iodepth=16', '--ioengine=libaio', '--direct=1', '--runtime=1', '--time_based']);
    const del = ublk('del', '-n', String(dev.id));
    if (r.errors.some((e) => e !== 0) || del.code !== 0) {
      failures++;
      t.fail(`cycle ${i}: fio errors ${r.errors}, del ${del.code} ${del.stderr}`);
    }
  }
  t.equal(failures, 0, 'every cycle ran fio without errors and deleted its device');
  t.same(snapshot(), before, 'no device node, state file or daemon is left');
  t.same(ublkFds(), [], 'no process holds a ublk device open');
});
