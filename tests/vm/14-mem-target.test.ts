// Issue 9: the mem target passes the loop target's fio verify and filesystem round trip.
import t from 'tap';
import { mkdirSync } from 'node:fs';
import { ROOT, addDevice, cleanup, fio, sh, ublk } from '../lib/ublk.js';
import { join } from 'node:path';

t.teardown(cleanup);

t.test('ublk add -t mem -s 256M: fio verify, mkfs, mount, fsck, checksums', async (t) => {
  const dev = addDevice('-t', 'mem', '-s', '256M', '-q', '2');
  const r = fio(['--name=v', `--filename=${dev.blockDevice}`, '--rw=randwrite', '--bs=4k-128k', '--iodepth=32', '--ioengine=libaio', '--direct=1', '--size=200M', '--verify=crc32c', '--verify_fatal=1']);
  t.same(r.errors, [0], 'fio verify passes');

  const mnt = '/run/ublk-test-mem';
  mkdirSync(mnt, { recursive: true });
  t.teardown(() => sh(`umount ${mnt} 2>/dev/null`));
  t.equal(sh(`mkfs.ext4 -q -F ${dev.blockDevice} && mount ${dev.blockDevice} ${mnt}`).code, 0, 'mkfs and mount');
  t.equal(sh(`cp -r ${['sys', 'aio', 'target', 'ublk', 'tools'].map((d) => join(ROOT, d)).join(' ')} ${mnt}/ && head -c 16M /dev/urandom > ${mnt}/random.bin`).code, 0, 'copy a tree');
  const sums = sh(`cd ${mnt} && find . -type f -print0 | sort -z | xargs -0 sha256sum`).stdout;
  t.equal(sh(`umount ${mnt}`).code, 0);
  const fsck = sh(`e2fsck -fn ${dev.blockDevice}`);
  t.equal(fsck.code, 0, `e2fsck clean ${fsck.stdout}`);
  t.equal(sh(`mount ${dev.blockDevice} ${mnt}`).code, 0, 'mount again');
  t.equal(sh(`cd ${mnt} && find . -type f -print0 | sort -z | xargs -0 sha256sum`).stdout, sums, 'same checksums');
  t.equal(sh(`umount ${mnt}`).code, 0);
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
});
