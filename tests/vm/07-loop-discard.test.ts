// Issue 6 acceptance: discard frees the image's blocks and reads back zeros; so does write-zeroes.
import t from 'tap';
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { addDevice, cleanup, scratchDir, sh, ublk } from '../lib/ublk.js';

t.teardown(cleanup);

const MiB = 1 << 20;

function allocated(path: string): number {
  return statSync(path).blocks * 512;
}

function allZero(dev: string, offsetMiB: number, lengthMiB: number): boolean {
  return sh(`cmp -n ${lengthMiB * MiB} <(dd if=${dev} bs=1M skip=${offsetMiB} count=${lengthMiB} iflag=direct status=none) /dev/zero`).code === 0;
}

t.test('blkdiscard -o 1M -l 64M frees blocks and the range reads as zeros', async (t) => {
  const img = join(scratchDir(), 'discard.img');
  sh(`head -c 128M /dev/urandom > ${img}`);
  t.teardown(() => rmSync(img, { force: true }));
  const dev = addDevice('-t', 'loop', '-f', img);
  const before = allocated(img);
  t.equal(sh(`blkdiscard -o 1M -l 64M ${dev.blockDevice}`).code, 0, 'blkdiscard');
  const after = allocated(img);
  t.ok(before - after >= 60 * MiB, `the image lost ${(before - after) / MiB} MiB of allocated blocks`);
  t.ok(allZero(dev.blockDevice, 1, 64), 'the discarded range reads as zeros');
  t.notOk(allZero(dev.blockDevice, 65, 1), 'the data after it is still there');
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
});

t.test('blkdiscard -z zeroes a range', async (t) => {
  const img = join(scratchDir(), 'zero.img');
  sh(`head -c 64M /dev/urandom > ${img}`);
  t.teardown(() => rmSync(img, { force: true }));
  const dev = addDevice('-t', 'loop', '-f', img, '--engine', 'uring');
  t.equal(sh(`blkdiscard -z -o 4M -l 16M ${dev.blockDevice}`).code, 0, 'blkdiscard -z');
  t.ok(allZero(dev.blockDevice, 4, 16), 'the range reads as zeros');
  t.notOk(allZero(dev.blockDevice, 0, 4), 'the data before it is still there');
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
  t.equal(sh(`cmp -n 4M ${img} /dev/zero`).code !== 0, true, 'the image kept its other data');
});

t.test('blkdiscard -z on an image in tmpfs, which cannot zero a range in place', async (t) => {
  const img = '/tmp/zero-tmpfs.img';
  sh(`head -c 32M /dev/urandom > ${img}`);
  t.teardown(() => rmSync(img, { force: true }));
  const dev = addDevice('-t', 'loop', '-f', img);
  sh('dmesg -C');
  t.equal(sh(`blkdiscard -z -o 1M -l 8M ${dev.blockDevice}`).code, 0, 'blkdiscard -z');
  t.ok(allZero(dev.blockDevice, 1, 8), 'the range reads as zeros');
  t.notOk(allZero(dev.blockDevice, 9, 1), 'the data after it is still there');
  t.notMatch(sh('dmesg').stdout, /ublkb\d+|I\/O error|critical/, 'the kernel saw no error');
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
});
