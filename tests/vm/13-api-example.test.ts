// Issue 9: a target written against the public API (examples/bad-sectors.ts),
// served by this test process: fio verify passes, the injected sectors fail with EIO.
import t from 'tap';
import { createDevice } from '../../index.js';
import { fio, sh, snapshot } from '../lib/ublk.js';

const BAD = [100000, 100001, 120000];

t.test('the bad-sectors example through createDevice()', async (t) => {
  const before = snapshot();
  const dev = await createDevice({
    target: new URL('../../examples/bad-sectors.js', import.meta.url),
    targetOptions: { size: '64M', badSectors: BAD },
    queues: 2,
    depth: 32,
  });
  t.teardown(() => dev.stop());
  t.match(dev.info.path, /^\/dev\/ublkb\d+$/);
  t.equal(dev.info.size, 64 << 20);
  t.equal(await dev.state(), 'LIVE');

  // Sectors 100000+ lie past 48 MiB: fio verifies the first 40 MiB.
  const r = fio(['--name=v', `--filename=${dev.info.path}`, '--rw=randwrite', '--bs=4k-64k', '--iodepth=16', '--ioengine=libaio', '--direct=1', '--size=40M', '--verify=crc32c', '--verify_fatal=1']);
  t.same(r.errors, [0], 'fio verify passes on good sectors');

  for (const s of BAD) {
    const read = sh(`dd if=${dev.info.path} of=/dev/null bs=512 skip=${s} count=1 iflag=direct status=none`);
    t.not(read.code, 0, `sector ${s} does not read`);
    t.match(read.stderr, /Input\/output error/, `sector ${s}: EIO`);
  }
  for (const s of [99999, 100002, 119999, 120001]) {
    t.equal(sh(`dd if=${dev.info.path} of=/dev/null bs=512 skip=${s} count=1 iflag=direct status=none`).code, 0, `sector ${s} reads`);
  }
  t.equal(sh(`dd if=/dev/zero of=${dev.info.path} bs=512 seek=${BAD[0]} count=1 oflag=direct status=none`).code, 0, 'a bad sector still takes writes');

  const stats = dev.stats();
  t.ok(stats.total.reads > 0 && stats.total.writes > 0, 'stats count reads and writes');
  t.ok(stats.total.errors >= BAD.length, 'and the failed reads');
  await dev.stop();
  t.same(snapshot(), before, 'stop() removes the device');
});
