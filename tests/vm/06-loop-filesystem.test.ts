// Issue 6 acceptance: a filesystem on a loop device survives umount, fsck, del and re-add.
import t from 'tap';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { addDevice, cleanup, copyTree, scratchDir, sh, treeSums, ublk } from '../lib/ublk.js';

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
  t.equal(sh(`mkfs.ext4 -q -F ${dev.blockDevice}`).code, 0, 'mkfs.ext4');
  t.equal(sh(`mount ${dev.blockDevice} ${mnt}`).code, 0, 'mount');
  const copy = copyTree(mnt);
  t.equal(copy.code, 0, `copy a tree ${copy.stderr}`);
  const sums = treeSums(mnt);
  t.ok(sums.split('\n').length > 20, 'many files were written');
  t.equal(sh(`umount ${mnt}`).code, 0, 'umount');
  const fsck = sh(`e2fsck -fn ${dev.blockDevice}`);
  t.equal(fsck.code, 0, `e2fsck -fn is clean: ${fsck.stdout}${fsck.stderr}`);
  t.equal(ublk('del', '-n', String(dev.id)).code, 0, 'del');

  dev = addDevice('-t', 'loop', '-f', img);
  t.equal(sh(`mount ${dev.blockDevice} ${mnt}`).code, 0, 'mount again');
  const again = treeSums(mnt);
  t.equal(again, sums, 'every file has its checksum');
  t.equal(sh(`umount ${mnt}`).code, 0);
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
});
