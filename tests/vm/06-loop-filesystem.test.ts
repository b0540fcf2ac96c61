// Issue 6 acceptance: a filesystem on a loop device survives umount, fsck, del and re-add.
import t from 'tap';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { addDevice, checkExt4, cleanup, fillExt4, scratchDir, sh, ublk } from '../lib/ublk.js';

t.teardown(cleanup);

t.test('mkfs.ext4, mount, copy a tree, umount, e2fsck clean, del, re-add, same checksums', async (t) => {
  const img = join(scratchDir(), 'fs.img');
  const mnt = '/run/ublk-test-mnt';
  mkdirSync(mnt, { recursive: true });
  sh(`truncate -s 256M ${img}`);
  t.teardown(() => {
    sh(`umount ${mnt} 2>/dev/null`);
    rmSync(img, { force: true });
  });
  let dev = addDevice('-t', 'loop', '-f', img, '-q', '2');
  const sums = fillExt4(t, dev.blockDevice, mnt);
  t.equal(ublk('del', '-n', String(dev.id)).code, 0, 'del');

  dev = addDevice('-t', 'loop', '-f', img);
  checkExt4(t, dev.blockDevice, mnt, sums);
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
});
