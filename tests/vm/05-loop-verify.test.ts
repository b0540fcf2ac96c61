// Issue 6 acceptance: fio verify through both engines, then the image equals the
// device; synced writes are in the image for a reader that bypasses the cache.
import t from 'tap';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { addDevice, cleanup, fio, scratchDir, sh, ublk } from '../lib/ublk.js';

t.teardown(cleanup);

for (const engine of ['aio', 'uring']) {
  t.test(`loop --engine ${engine}: fio randwrite 4k-128k verify=crc32c, then cmp image and device`, async (t) => {
    const img = join(scratchDir(), `verify-${engine}.img`);
    sh(`truncate -s 256M ${img}`);
    t.teardown(() => rmSync(img, { force: true }));
    const dev = addDevice('-t', 'loop', '-f', img, '-q', '2', '--engine', engine);
    t.equal(dev.engine, engine);
    const r = fio([
      '--name=v', `--filename=${dev.blockDevice}`, '--rw=randwrite', '--bs=4k-128k', '--iodepth=32', '--ioengine=libaio',
      '--direct=1', '--size=200M', '--verify=crc32c', '--verify_fatal=1',
    ]);
    t.equal(r.code, 0, 'fio exits 0');
    t.same(r.errors, [0], 'verify passed');
    const cmp = sh(`cmp ${img} ${dev.blockDevice}`);
    t.equal(cmp.code, 0, `cmp finds no difference ${cmp.stdout}${cmp.stderr}`);
    t.equal(ublk('del', '-n', String(dev.id)).code, 0);
  });

  t.test(`loop --engine ${engine}: data written and synced is in the image for another reader with O_DIRECT`, async (t) => {
    const img = join(scratchDir(), `synced-${engine}.img`);
    const pattern = join(scratchDir(), `synced-${engine}.pattern`);
    sh(`truncate -s 64M ${img} && dd if=/dev/urandom of=${pattern} bs=1M count=8 status=none`);
    t.teardown(() => rmSync(img, { force: true }));
    t.teardown(() => rmSync(pattern, { force: true }));
    const dev = addDevice('-t', 'loop', '-f', img, '--engine', engine);
    // Buffered writes through the device's page cache; sync sends them and a FLUSH.
    t.equal(sh(`dd if=${pattern} of=${dev.blockDevice} bs=1M seek=16 status=none && sync`).code, 0, 'written and synced');
    const cmp = sh(`cmp <(dd if=${img} bs=1M skip=16 count=8 iflag=direct status=none) ${pattern}`);
    t.equal(cmp.code, 0, `the image holds the data while the device is live ${cmp.stdout}${cmp.stderr}`);
    t.equal(ublk('del', '-n', String(dev.id)).code, 0, 'ublk del');
  });
}
