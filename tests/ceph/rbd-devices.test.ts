// Issue 18: block devices on a Ceph RBD image, served through librbd from
// a real single-node cluster (tests/ceph/cluster: a monitor and a BlueStore
// OSD on 127.0.0.1 in the VM), checked with the tools a user has: fio
// verify, mkfs/e2fsck, rbd export against a loop twin that got the same writes.
import t from 'tap';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CephCluster, cephMissing } from '../lib/ceph.js';
import { addDevice, background, checkExt4, cleanup, fillExt4, fio, fioErrors, scratchDir, sh, sleep, snapshot, ublk, within } from '../lib/ublk.js';

t.teardown(cleanup);
const EIO = 5;
const missing = cephMissing();
if (missing !== null) {
  t.test('rbd devices on a Ceph cluster', { skip: missing }, () => undefined);
} else {
  const dir = join(scratchDir(), 'rbd');
  mkdirSync(dir, { recursive: true });
  const cluster = CephCluster.start(3300, dir);
  t.teardown(() => {
    cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const conf = cluster.conf;
  const del = (id: number) => ublk('del', '-n', String(id)).code;

  t.test('2 queues: fio verify crc32c; list shows the image, stats each queue', async (t) => {
    cluster.rbd('create', '--size', '256M', 'rbd/verify');
    const dev = addDevice('-t', 'rbd', '--image', 'rbd/verify', '--conf', conf, '-q', '2');
    t.equal(dev.size, 256 * 2 ** 20, 'the device has the image size');
    t.equal(dev.queues, 2);
    const v = fio([
      '--name=v', `--filename=${dev.blockDevice}`, '--rw=randwrite', '--bsrange=4k-256k', '--iodepth=16', '--ioengine=libaio', '--direct=1',
      '--size=64M', '--numjobs=2', '--offset_increment=128M', '--verify=crc32c', '--verify_fatal=1',
    ]);
    t.same(v.errors, [0, 0], 'fio verify crc32c passes');
    t.match(ublk('list', '-n', String(dev.id)).stdout, /rbd\s+image=rbd\/verify/, '`ublk list` shows the image');
    const stats = JSON.parse(ublk('stats', '-n', String(dev.id), '--json').stdout) as { target: { rbd: { ios: number; errors: number; avgLatencyUs: number }[] } };
    t.equal(stats.target.rbd.length, 2, 'a row per queue');
    for (const q of stats.target.rbd) t.ok(q.ios > 100 && q.errors === 0 && q.avgLatencyUs > 0, `a queue's librbd requests and latency: ${JSON.stringify(q)}`);
    t.equal(del(dev.id), 0, 'ublk del');
  });

  t.test('the image holds exactly what was written (rbd export vs a loop twin); ext4 on it; a second device on it is refused', async (t) => {
    cluster.rbd('create', '--size', '128M', 'rbd/fs');
    const twinPath = join(dir, 'twin.raw');
    sh(`truncate -s 128M ${twinPath}`);
    const dev = addDevice('-t', 'rbd', '--image', 'rbd/fs', '--conf', conf, '-q', '2');
    const twin = addDevice('-t', 'loop', '-f', twinPath);
    // The same random writes, the same bytes, on both (refill_buffers with a fixed seed).
    for (const d of [dev.blockDevice, twin.blockDevice]) {
      const r = fio(['--name=same', `--filename=${d}`, '--rw=randwrite', '--bsrange=4k-256k', '--ioengine=libaio', '--iodepth=16', '--direct=1', '--size=128M', '--io_size=48M', '--randseed=4242', '--refill_buffers=1']);
      t.same(r.errors, [0], `fio writes ${d}`);
    }
    const second = ublk('add', '-t', 'rbd', '--image', 'rbd/fs', '--conf', conf);
    t.equal(second.code, 1, 'a second device on the image: exit 1');
    t.match(second.stderr, /^ublk: add: rbd\/fs: the image is locked by another client\n$/, `one line: ${second.stderr}`);
    t.equal(del(dev.id), 0, 'ublk del (rbd)');
    t.equal(del(twin.id), 0, 'ublk del (loop)');
    const exported = join(dir, 'fs.export');
    cluster.rbd('export', 'rbd/fs', exported);
    t.equal(sh(`cmp ${exported} ${twinPath}`).code, 0, 'rbd export equals the loop twin');
    rmSync(exported);

    const fs = addDevice('-t', 'rbd', '--image', 'rbd/fs', '--conf', conf);
    const mnt = '/run/ublk-rbd-mnt';
    mkdirSync(mnt, { recursive: true });
    t.teardown(() => sh(`umount ${mnt} 2>/dev/null`));
    checkExt4(t, fs.blockDevice, mnt, fillExt4(t, fs.blockDevice, mnt));
    t.equal(del(fs.id), 0, 'ublk del');
  });

  t.test('the OSD stopped under fio: fio sees EIO within --timeout, ublk del does not hang; started again, IO resumes', async (t) => {
    cluster.rbd('create', '--size', '64M', 'rbd/osd');
    const before = snapshot();
    const dev = addDevice('-t', 'rbd', '--image', 'rbd/osd', '--conf', conf, '-q', '2', '--timeout', '5');
    const load = background('fio', [
      '--output-format=json', '--name=load', `--filename=${dev.blockDevice}`, '--rw=randrw', '--bs=4k', '--ioengine=libaio',
      '--iodepth=16', '--direct=1', '--numjobs=2', '--time_based', '--runtime=300',
    ]);
    await sleep(3000);
    cluster.stopOsd();
    const stopped = Date.now();
    const r = await within(load.done, 60_000);
    t.ok(r !== null && Date.now() - stopped < 20_000, `fio ended ${Date.now() - stopped} ms after the OSD stopped (timeout 5 s)`);
    t.ok(r !== null && fioErrors(r).includes(EIO), `fio saw EIO (${r === null ? '' : fioErrors(r).join(', ')})`);
    sh(`kill -9 ${load.pid} 2>/dev/null`);
    cluster.startOsd();
    const dd = sh(`dd if=/dev/urandom of=/run/ublk-rbd-1m bs=1M count=1 status=none && dd if=/run/ublk-rbd-1m of=${dev.blockDevice} bs=1M oflag=direct status=none && cmp -n 1048576 /run/ublk-rbd-1m ${dev.blockDevice}`);
    t.equal(dd.code, 0, `IO resumes once the OSD is back: a write reads back ${dd.stderr}`);

    // The OSD gone again while a writer waits: ublk del still ends.
    cluster.stopOsd();
    const writer = background('dd', ['if=/dev/zero', `of=${dev.blockDevice}`, 'bs=64k', 'count=64', 'oflag=direct']);
    await sleep(1000);
    const t0 = Date.now();
    t.equal(del(dev.id), 0, 'ublk del with IO the cluster does not answer');
    // Draining librbd's requests, then rbd_close's flush and lock release: up to three timeouts.
    t.ok(Date.now() - t0 < 30_000, `within three timeouts and a margin (${Date.now() - t0} ms)`);
    await within(writer.done, 30_000);
    sh(`kill -9 ${writer.pid} 2>/dev/null`);
    cluster.startOsd();
    t.same(snapshot(), before, 'no device, state file or daemon left');
  });

  t.test('bad inputs: one line, exit 1, nothing left', async (t) => {
    const before = snapshot();
    const cases: [string[], RegExp][] = [
      [['--image', 'nopool'], /^ublk: add: bad image 'nopool': POOL\/IMAGE/],
      [['--image', 'rbd/none', '--conf', conf], /^ublk: add: rbd\/none: pool 'rbd' has no image 'none'$/],
      [['--image', 'gone/x', '--conf', conf], /^ublk: add: gone\/x: the cluster has no pool 'gone'$/],
      [['--image', 'rbd/x', '--conf', '/nonexistent.conf'], /^ublk: add: cannot read the Ceph configuration \/nonexistent.conf: /],
    ];
    for (const [args, message] of cases) {
      const r = ublk('add', '-t', 'rbd', ...args);
      t.equal(r.code, 1, `ublk add ${args.join(' ')}: exit 1`);
      t.match(r.stderr.trim(), message, r.stderr.trim());
      t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    }
    t.same(snapshot(), before, 'no device, state file or daemon left');
  });
}
