// Issue 16: qcow2 images as block devices, checked with tools nobody here
// wrote: qemu-img (create, check, compare, convert), fio, mkfs/e2fsck, the
// kernel's loop driver. What is asserted is what a user would see.
import t from 'tap';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { addDevice, background, cleanup, fillExt4, fio, processAlive, scratchDir, sh, sleep, snapshot, treeSums, ublk, waitFor, within } from '../lib/ublk.js';

t.teardown(cleanup);

const dir = join(scratchDir(), 'qcow2');
mkdirSync(dir, { recursive: true });
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const p = (name: string) => join(dir, name);

function must(script: string): string {
  const r = sh(script);
  if (r.code !== 0) throw new Error(`${script}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** qemu-img check: exit 0 (clean) or 3 (leaked clusters only) and what it said. */
function check(image: string): { code: number; said: string } {
  const r = sh(`qemu-img check ${image}`);
  return { code: r.code, said: (r.stdout + r.stderr).trim().split('\n')[0] };
}

const del = (id: number) => ublk('del', '-n', String(id)).code;

/** The same random writes, the same bytes, wherever fio runs (refill_buffers with a fixed seed). */
function sameWrites(dev: string): string[] {
  return [
    '--name=same', `--filename=${dev}`, '--rw=randwrite', '--bsrange=4k-256k', '--ioengine=libaio', '--iodepth=16', '--direct=1',
    '--size=96M', '--io_size=48M', '--randseed=4242', '--refill_buffers=1', '--numjobs=2', '--offset_increment=96M',
  ];
}

const images: [string, string][] = [
  ['64 KiB clusters, no backing file', 'qemu-img create -q -f qcow2 img.qcow2 256M'],
  ['2 MiB clusters over a backing file', 'qemu-img create -q -f qcow2 -o cluster_size=2M -b base.qcow2 -F qcow2 img.qcow2 256M'],
];

for (const [name, create] of images) {
  t.test(`${name}: fio writes it and its raw twin alike; qemu-img check and compare agree; fio verify crc32c on 2 queues`, async (t) => {
    must(`cd ${dir} && rm -f img.qcow2 twin.raw base.qcow2 && head -c 64M /dev/urandom > base.raw && qemu-img convert -O qcow2 base.raw base.qcow2 && ${create}`);
    // The twin: what the image reads now, as a raw file the loop target serves.
    must(`qemu-img convert -O raw ${p('img.qcow2')} ${p('twin.raw')}`);
    const img = addDevice('-t', 'qcow2', '-f', p('img.qcow2'), '-q', '2');
    const twin = addDevice('-t', 'loop', '-f', p('twin.raw'), '-q', '2');
    t.equal(img.target, 'qcow2');
    t.equal(img.size, 256 * 2 ** 20, 'the device has the virtual size');
    for (const dev of [img, twin]) {
      const r = fio(sameWrites(dev.blockDevice));
      t.same(r.errors, [0, 0], `fio writes ${dev.blockDevice} (${dev.target})`);
    }
    const list = ublk('list', '-n', String(img.id)).stdout;
    t.match(list, /qcow2\s+file=\S+img\.qcow2 version=3 cluster=\d+/, '`ublk list` names the image');
    const stats = JSON.parse(ublk('stats', '-n', String(img.id), '--json').stdout) as { target: { qcow2: { allocated: number } } };
    t.ok(stats.target.qcow2.allocated > 0, `\`ublk stats\` counts allocations (${stats.target.qcow2.allocated})`);
    t.equal(del(img.id), 0, 'ublk del (qcow2)');
    t.equal(del(twin.id), 0, 'ublk del (loop)');
    const c = check(p('img.qcow2'));
    t.equal(c.code, 0, `qemu-img check: ${c.said}`);
    const cmp = sh(`qemu-img compare -f qcow2 -F raw ${p('img.qcow2')} ${p('twin.raw')}`);
    t.equal(cmp.code, 0, `qemu-img compare: ${cmp.stdout.trim()}${cmp.stderr.trim()}`);

    // Served again: fio writes and verifies, each job on its own part, both queues busy.
    const again = addDevice('-t', 'qcow2', '-f', p('img.qcow2'), '-q', '2');
    const v = fio([
      '--name=v', `--filename=${again.blockDevice}`, '--rw=randwrite', '--bsrange=4k-256k', '--iodepth=16', '--ioengine=libaio',
      '--direct=1', '--size=64M', '--numjobs=2', '--offset_increment=128M', '--verify=crc32c', '--verify_fatal=1',
    ]);
    t.same(v.errors, [0, 0], 'fio verify crc32c passes');
    t.equal(del(again.id), 0, 'ublk del');
    const c2 = check(p('img.qcow2'));
    t.equal(c2.code, 0, `qemu-img check: ${c2.said}`);
  });
}

t.test('mkfs.ext4, mount, copy a tree, umount, e2fsck clean; the image converted to raw mounts with the kernel loop driver', async (t) => {
  const mnt = '/run/ublk-qcow2-mnt';
  mkdirSync(mnt, { recursive: true });
  t.teardown(() => sh(`umount ${mnt} 2>/dev/null; losetup -D`));
  must(`rm -f ${p('fs.qcow2')} && qemu-img create -q -f qcow2 ${p('fs.qcow2')} 256M`);
  const dev = addDevice('-t', 'qcow2', '-f', p('fs.qcow2'), '-q', '2');
  const sums = fillExt4(t, dev.blockDevice, mnt);
  t.equal(del(dev.id), 0, 'ublk del');
  t.equal(check(p('fs.qcow2')).code, 0, 'qemu-img check is clean');
  must(`qemu-img convert -O raw ${p('fs.qcow2')} ${p('fs.raw')}`);
  t.equal(sh(`mount -o loop,ro ${p('fs.raw')} ${mnt}`).code, 0, 'the raw conversion mounts with the kernel loop driver');
  t.equal(treeSums(mnt), sums, 'every file has its checksum');
  t.equal(sh(`umount ${mnt}`).code, 0);
  rmSync(p('fs.raw'), { force: true });
});

t.test('kill -9 of the daemon under writes: qemu-img check finds no corruption, and what was fsynced reads back', async (t) => {
  must(`rm -f ${p('kill.qcow2')} && qemu-img create -q -f qcow2 ${p('kill.qcow2')} 128M`);
  const dev = addDevice('-t', 'qcow2', '-f', p('kill.qcow2'), '-q', '2');
  // Load on the second half; on the first, 64 KiB blocks written one by one, each fdatasync'ed, then logged.
  const load = background('fio', [
    '--output-format=json', '--name=load', `--filename=${dev.blockDevice}`, '--rw=randwrite', '--bsrange=4k-128k', '--ioengine=libaio',
    '--iodepth=16', '--direct=1', '--offset=64M', '--size=64M', '--time_based', '--runtime=900',
  ]);
  const log = p('synced.log');
  const writer = background(process.execPath, [
    '-e',
    `const fs = require('fs'); const fd = fs.openSync('${dev.blockDevice}', 'r+'); const b = Buffer.alloc(65536);
     for (let i = 0; i < 1024; i++) { b.fill(i & 255); b.writeUInt32LE(i, 0); fs.writeSync(fd, b, 0, b.length, i * 65536);
       fs.fdatasyncSync(fd); fs.appendFileSync('${log}', i + '\\n'); }`,
  ]);
  const syncedSoFar = () => Number(sh(`cat ${log} 2>/dev/null | wc -l`).stdout);
  t.ok(await waitFor(() => syncedSoFar() >= 20, 300_000), 'blocks are being synced');
  process.kill(dev.pid, 'SIGKILL');
  t.ok(await waitFor(() => !processAlive(dev.pid), 30_000), 'the daemon is gone');
  await within(writer.done, 120_000);
  await within(load.done, 120_000);
  sh(`kill -9 ${writer.pid} ${load.pid} 2>/dev/null`);
  t.equal(del(dev.id), 0, 'ublk del removes the dead device');
  const synced = readFileSync(log, 'utf8').trim().split('\n').map(Number);
  const c = check(p('kill.qcow2'));
  t.ok(c.code === 0 || c.code === 3, `qemu-img check: no corruption (exit ${c.code}: ${c.said})`);
  must(`qemu-img convert -O raw ${p('kill.qcow2')} ${p('kill.raw')}`);
  const raw = readFileSync(p('kill.raw'));
  const bad = synced.filter((i) => raw.readUInt32LE(i * 65536) !== i || raw[i * 65536 + 65535] !== (i & 255));
  t.same(bad, [], `all ${synced.length} fsynced blocks read back`);
  rmSync(p('kill.raw'), { force: true });
});

t.test('compressed images (deflate, zstd) read as the raw original', async (t) => {
  must(`cd ${dir} && (head -c 4M /dev/urandom; yes 'a compressible line of text' | head -c 12M) > orig.raw`);
  for (const type of ['zlib', 'zstd']) {
    must(`cd ${dir} && rm -f c.qcow2 && qemu-img convert -c -O qcow2 -o compression_type=${type} orig.raw c.qcow2`);
    const dev = addDevice('-t', 'qcow2', '-f', p('c.qcow2'), '--read-only');
    const cmp = sh(`cmp ${dev.blockDevice} ${p('orig.raw')}`);
    t.equal(cmp.code, 0, `${type}: the device reads the original bytes ${cmp.stdout}${cmp.stderr}`);
    t.equal(del(dev.id), 0);
  }
});

t.test('a GPT image with two partitions: /dev/ublkbNp1 and p2 appear, a filesystem on p2 mounts', async (t) => {
  const mnt = '/run/ublk-gpt-mnt';
  mkdirSync(mnt, { recursive: true });
  t.teardown(() => sh(`umount ${mnt} 2>/dev/null`));
  must(`rm -f ${p('gpt.img')} && truncate -s 128M ${p('gpt.img')} && printf 'label: gpt\\n,32M\\n,\\n' | sfdisk -q ${p('gpt.img')}`);
  const dev = addDevice('-t', 'loop', '-f', p('gpt.img'));
  t.ok(await waitFor(() => sh(`test -b ${dev.blockDevice}p1 && test -b ${dev.blockDevice}p2`).code === 0, 30_000), 'p1 and p2 are there');
  t.equal(sh(`mkfs.ext4 -q -F ${dev.blockDevice}p2 && mount ${dev.blockDevice}p2 ${mnt} && echo hello > ${mnt}/f && umount ${mnt}`).code, 0, 'mkfs, mount, write on p2');
  t.equal(sh(`mount ${dev.blockDevice}p2 ${mnt} && cat ${mnt}/f`).stdout, 'hello\n', 'mounted again, the file is there');
  sh(`umount ${mnt}`);
  t.equal(del(dev.id), 0);
});

t.test('bad qcow2 input: one line, exit 1, nothing left behind', async (t) => {
  must(
    `cd ${dir} && rm -f plain.qcow2 snap.qcow2 && qemu-img create -q -f qcow2 plain.qcow2 16M && qemu-img create -q -f qcow2 snap.qcow2 16M && ` +
      `qemu-img snapshot -c s snap.qcow2 && truncate -s 1M not.qcow2 && cp plain.qcow2 container.img && truncate -s 1M container.img`,
  );
  const cases: [string, string[], RegExp][] = [
    ['a qcow2 image given to the loop target', ['-t', 'loop', '-f', p('plain.qcow2')], /plain\.qcow2 is a qcow2 image: use -t qcow2 \(or --raw to serve its bytes as they are\)$/],
    ['a missing image', ['-t', 'qcow2', '-f', p('nope.qcow2')], /nope\.qcow2: No such file or directory$/],
    ['an image with snapshots, for writing', ['-t', 'qcow2', '-f', p('snap.qcow2')], /snap\.qcow2: it has 1 internal snapshot\(s\)/],
    ['a raw file', ['-t', 'qcow2', '-f', p('not.qcow2')], /not\.qcow2 is not a qcow2 image$/],
    ['--engine', ['-t', 'qcow2', '-f', p('plain.qcow2'), '--engine', 'uring'], /the qcow2 target has no --engine/],
  ];
  for (const [name, args, message] of cases) {
    const before = snapshot();
    const r = ublk('add', ...args);
    t.equal(r.code, 1, `${name}: exit 1`);
    t.match(r.stderr.trim(), message, `${name}: says why`);
    t.match(r.stderr, /^ublk: add: [^\n]+\n$/, `${name}: one line`);
    t.same(snapshot(), before, `${name}: nothing left behind`);
  }
  // With --raw the loop target serves the container's bytes.
  const raw = addDevice('-t', 'loop', '-f', p('container.img'), '--raw', '--read-only');
  t.equal(sh(`head -c 4 ${raw.blockDevice} | od -An -tx1`).stdout.trim(), '51 46 49 fb', '--raw: the device starts with the qcow2 magic');
  t.equal(del(raw.id), 0);
});
