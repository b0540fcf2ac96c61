// Issue 9: the mem target passes the loop target's fio verify and filesystem round trip.
import t from 'tap';
import { mkdirSync } from 'node:fs';
import { addDevice, checkExt4, cleanup, fillExt4, fio, sh, ublk } from '../lib/ublk.js';

t.teardown(cleanup);

t.test('ublk add -t mem -s 256M: fio verify, mkfs, mount, fsck, checksums', async (t) => {
  const dev = addDevice('-t', 'mem', '-s', '256M', '-q', '2');
  const r = fio(['--name=v', `--filename=${dev.blockDevice}`, '--rw=randwrite', '--bs=4k-128k', '--iodepth=32', '--ioengine=libaio', '--direct=1', '--size=200M', '--verify=crc32c', '--verify_fatal=1']);
  t.same(r.errors, [0], 'fio verify passes');

  const mnt = '/run/ublk-test-mem';
  mkdirSync(mnt, { recursive: true });
  t.teardown(() => sh(`umount ${mnt} 2>/dev/null`));
  checkExt4(t, dev.blockDevice, mnt, fillExt4(t, dev.blockDevice, mnt));
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
});
