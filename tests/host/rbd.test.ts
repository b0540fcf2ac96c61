// The rbd target on the host (no ublk_drv): its queues served by the real
// dispatcher against a fake kernel (tests/lib/target-client.ts), talking to
// a real single-node Ceph cluster (tests/ceph/cluster) through librbd.
import t from 'tap';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import rbd from '../../target/rbd/index.js';
import { CephCluster, cephMissing } from '../lib/ceph.js';
import { TargetClient } from '../lib/target-client.js';
import { readAll, result, workload } from '../lib/workload.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const EBADF = -9;
const EIO = -5;

const missing = cephMissing();
if (missing !== null) {
  t.test('the rbd target against a Ceph cluster', { skip: missing }, () => undefined);
} else {
  // A port of its own per run: a cluster another test left would answer otherwise.
  const port = 20000 + (process.pid % 2000) * 4;
  const cluster = CephCluster.start(port);
  t.teardown(async () => {
    await TargetClient.closeAll();
    cluster.stop();
  });
  const conf = cluster.conf;
  cluster.rbd('create', '--size', '64M', 'rbd/disk');

  t.test('2 queues: random writes and reads match, flush, discard, write zeroes; rbd export holds what was written', async (t) => {
    const c = await TargetClient.open(rbd, { image: 'rbd/disk', conf }, { queues: 2, depth: 16, maxIoSize: MiB });
    t.equal(c.device.size, 64 * MiB, 'the device is the image');
    t.equal(c.device.info?.lock, 'exclusive', 'the device holds the exclusive lock');
    const model = Buffer.alloc(64 * MiB);
    t.equal(await workload(c, model, 480), 0, 'every read returned what was written last, on both queues');
    await c.flush(0);
    await c.flush(1);
    await c.writeZeroes(MiB, 2 * MiB, { qId: 1 });
    model.fill(0, MiB, 3 * MiB);
    await c.discard(8 * MiB, MiB);
    model.fill(0, 8 * MiB, 9 * MiB);
    t.ok((await readAll(c, 64 * MiB)).equals(model), 'the whole device reads back as the model (zeroed and discarded ranges are zeros)');
    const stats = c.device.stats?.(c.statsBuffers()) as { rbd: { ios: number; errors: number; avgLatencyUs: number }[] };
    t.ok(stats.rbd.every((q) => q.ios > 100 && q.errors === 0 && q.avgLatencyUs > 0), `ublk stats: each queue's requests and librbd latency (${JSON.stringify(stats.rbd)})`);
    await c.close();
    const out = `${conf}.export`;
    cluster.rbd('export', 'rbd/disk', out);
    t.ok(readFileSync(out).equals(model), 'rbd export of the image equals what was written');
    rmSync(out);
  });

  t.test('requests on one queue of two wake that queue only', async (t) => {
    const c = await TargetClient.open(rbd, { image: 'rbd/disk', conf }, { queues: 2, depth: 16, maxIoSize: MiB });
    t.equal((await c.read(0, 4 * KiB, 1)).length, 4 * KiB, 'a read on queue 1');
    const before = c.queueStats(1).enters;
    for (let i = 0; i < 8; i++) await Promise.all(Array.from({ length: 8 }, (_, j) => c.read((i * 8 + j) * 4 * KiB, 4 * KiB, 0)));
    const turns = c.queueStats(1).enters - before;
    // One wake-up tells queue 1 it has nothing out; the poll's removal may post one more.
    t.ok(turns <= 3, `queue 1 ran ${turns} turns while queue 0 served 64 reads`);
    await c.close();
  });

  t.test('a second device on the same image: locked by another client', async (t) => {
    const c = await TargetClient.open(rbd, { image: 'rbd/disk', conf });
    await t.rejects(TargetClient.open(rbd, { image: 'rbd/disk', conf }), { name: 'TargetError', message: /^rbd\/disk: the image is locked by another client/ });
    t.ok((await c.read(0, 4 * KiB)).length === 4 * KiB, 'the first device still serves');
    await c.close();
  });

  t.test('--read-only: reads served, writes refused', async (t) => {
    const c = await TargetClient.open(rbd, { image: 'rbd/disk', conf, readOnly: true });
    t.equal(c.device.readOnly, true, 'a read-only device');
    t.equal((await c.read(0, 4 * KiB)).length, 4 * KiB, 'a read');
    t.equal(await result(c.write(0, Buffer.alloc(4 * KiB))), EBADF, 'a write fails');
    await c.close();
  });

  t.test('the OSD stopped: a write fails with EIO within --timeout; started again, IO resumes', async (t) => {
    const c = await TargetClient.open(rbd, { image: 'rbd/disk', conf, timeout: 3 });
    const data = Buffer.alloc(64 * KiB, 0xa5);
    cluster.stopOsd();
    const t0 = Date.now();
    t.equal(await result(c.write(0, data)), EIO, 'the write fails with EIO');
    t.ok(Date.now() - t0 < 10_000, `within the timeout (${Date.now() - t0} ms)`);
    cluster.startOsd();
    // The OSD is up in the map; its placement groups may still be peering.
    let tries = 1;
    while ((await result(c.write(0, data))) !== 0 && tries < 10) tries++;
    t.ok(tries < 10, `a write succeeds again (after ${tries} tries)`);
    t.ok((await c.read(0, data.length)).equals(data), 'a write and a read after the OSD came back');
    await c.close();
  });

  t.test('bad inputs: one line each', async (t) => {
    const open = (o: Record<string, unknown>) => rbd.open({ image: 'rbd/disk', conf, ...o } as never);
    const refused = async (o: Record<string, unknown>, message: RegExp, what: string) => {
      await t.rejects(async () => open(o), { name: 'TargetError', message }, what);
    };
    await refused({ image: 'disk' }, /^bad image 'disk': POOL\/IMAGE/, 'an image without a pool');
    await refused({ image: undefined }, /needs an image \(--image POOL\/IMAGE\)/, 'no image');
    await refused({ conf: '/nonexistent/ceph.conf' }, /^cannot read the Ceph configuration \/nonexistent\/ceph.conf: /, 'a missing configuration');
    await refused({ image: 'nopool/disk' }, /^nopool\/disk: the cluster has no pool 'nopool'$/, 'no such pool');
    await refused({ image: 'rbd/nope' }, /^rbd\/nope: pool 'rbd' has no image 'nope'$/, 'no such image');
    cluster.ceph('auth', 'get-or-create', 'client.reader', 'mon', 'allow r', 'osd', 'allow r pool=other', '-o', `${conf}.reader`);
    await refused({ id: 'reader', keyring: `${conf}.reader` }, /^rbd\/disk: client.reader may not open the image: Operation not permitted$/, 'no permission on the pool');
    const far = `${conf}.far`;
    const text = readFileSync(conf, 'utf8').replace(/mon host = .*/, `mon host = [v2:127.0.0.1:${port + 2},v1:127.0.0.1:${port + 3}]`);
    writeFileSync(far, text);
    const t0 = Date.now();
    await refused({ conf: far, timeout: 3 }, /^cannot reach the Ceph cluster \(mon_host .*\) within 3 s$/, 'no monitor at the address');
    t.ok(Date.now() - t0 < 15_000, 'within the timeout');
  });
}
