// The qcow2 target on the host (no ublk_drv): its queues served by the real
// dispatcher against a fake kernel (tests/lib/target-client.ts). Images are
// made, checked and converted by qemu-img and qemu-io (qemu-utils), which
// nobody here wrote: what the device reads must be what `qemu-img convert
// -O raw` reads, and after writes `qemu-img check` must find no error.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import qcow2 from '../../target/qcow2/index.js';
import { openImage, readGuest } from '../../target/qcow2/layer.js';
import { TargetError } from '../../target/target.js';
import { holdWithQemuIo } from '../lib/qemu-holder.js';
import { TargetClient } from '../lib/target-client.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 8 * MiB;
// /var/tmp, not a tmpfs: O_DIRECT works there as on a disk.
const dir = mkdtempSync('/var/tmp/ublk-qcow2-');
t.teardown(async () => {
  await TargetClient.closeAll(); // a test that failed half-way left its device open
  rmSync(dir, { recursive: true, force: true });
});

function qemu(tool: string, ...args: string[]): string {
  return execFileSync(tool, args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
const p = (name: string) => join(dir, name);

function asRaw(image: string): Buffer {
  qemu('qemu-img', 'convert', '-O', 'raw', image, p('converted.raw'));
  return readFileSync(p('converted.raw'));
}

/** qemu-img check's verdict: its first line, or what it said when it found errors. */
function check(image: string): string {
  try {
    return qemu('qemu-img', 'check', image).split('\n')[0];
  } catch (e) {
    return `qemu-img check failed: ${(e as { stdout?: string }).stdout ?? e}`;
  }
}

/** 1 MiB random, 1 MiB of zeros, the rest compressible text. */
function baseData(): Buffer {
  const b = Buffer.alloc(SIZE);
  let x = 12345;
  for (let i = 0; i < MiB; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  const line = Buffer.from('ublk-ts serves qcow2 images cluster by cluster\n');
  for (let at = 2 * MiB; at < SIZE; at += line.length) line.copy(b, at);
  return b;
}

const base = baseData();
writeFileSync(p('base.raw'), base);
qemu('qemu-img', 'convert', '-O', 'qcow2', 'base.raw', 'base.qcow2');

/** Images qemu made: name → how. Each reads as its own `qemu-img convert -O raw`. */
const images: [string, () => void][] = [
  ['v3, 64 KiB clusters', () => qemu('qemu-img', 'convert', '-O', 'qcow2', 'base.raw', 'img.qcow2')],
  ['v2', () => qemu('qemu-img', 'convert', '-O', 'qcow2', '-o', 'compat=0.10', 'base.raw', 'img.qcow2')],
  ['512 B clusters', () => qemu('qemu-img', 'convert', '-O', 'qcow2', '-o', 'cluster_size=512', 'base.raw', 'img.qcow2')],
  ['2 MiB clusters', () => qemu('qemu-img', 'convert', '-O', 'qcow2', '-o', 'cluster_size=2M', 'base.raw', 'img.qcow2')],
  ['compressed (deflate)', () => qemu('qemu-img', 'convert', '-c', '-O', 'qcow2', 'base.raw', 'img.qcow2')],
  ['compressed (zstd), 4 KiB clusters', () => qemu('qemu-img', 'convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd,cluster_size=4096', 'base.raw', 'img.qcow2')],
  ['refcount_bits=1', () => qemu('qemu-img', 'convert', '-O', 'qcow2', '-o', 'refcount_bits=1', 'base.raw', 'img.qcow2')],
  ['lazy refcounts', () => qemu('qemu-img', 'convert', '-O', 'qcow2', '-o', 'lazy_refcounts=on', 'base.raw', 'img.qcow2')],
  ['preallocated (metadata)', () => qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', 'img.qcow2', '8M')],
  [
    'zero clusters and data over a qcow2 backing file',
    () => {
      qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'img.qcow2');
      qemu('qemu-io', '-c', 'write -P 0x55 100k 300k', '-c', 'write -z 1M 2M', '-c', 'write -z 5000k 4k', 'img.qcow2');
    },
  ],
  [
    'a chain: 4 KiB clusters over 64 KiB over compressed, relative names',
    () => {
      qemu('qemu-img', 'convert', '-c', '-O', 'qcow2', 'base.raw', 'c.qcow2');
      qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'c.qcow2', '-F', 'qcow2', 'mid.qcow2');
      qemu('qemu-io', '-c', 'write -P 0x66 3M 700k', 'mid.qcow2');
      qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', '-b', 'mid.qcow2', '-F', 'qcow2', 'img.qcow2');
      qemu('qemu-io', '-c', 'write -P 0x77 3200k 5k', '-c', 'write -z 6M 64k', 'img.qcow2');
    },
  ],
  [
    'a raw backing file smaller than the image',
    () => {
      qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'img.qcow2', '12M');
      qemu('qemu-io', '-c', 'write -P 0x88 7M 2M', 'img.qcow2');
    },
  ],
];

t.test('images made by qemu-img read as qemu-img convert -O raw reads them, cluster by cluster and through a queue', async (t) => {
  for (const [name, make] of images) {
    make();
    const want = asRaw(p('img.qcow2'));
    const img = openImage(p('img.qcow2'), true);
    const cs = 2 ** img.layers[0].clusterBits;
    const got = Buffer.alloc(want.length);
    for (let at = 0; at < got.length; at += cs) readGuest(img.layers, 0, at, got.subarray(at, at + cs));
    img.close();
    t.ok(got.equals(want), `${name}: the format layer reads the same bytes`);
    const c = await TargetClient.open(qcow2, { file: p('img.qcow2'), readOnly: true });
    t.equal(c.device.size, want.length, `${name}: the device has the virtual size`);
    // Reads of odd lengths and offsets cross cluster and layer boundaries.
    const parts = await Promise.all([0, 1, 2, 3].map((k) => c.read(k * 1536 * KiB + 512 * k, 1536 * KiB - 512)));
    await c.close();
    t.ok(
      parts.every((part, k) => part.equals(want.subarray(k * 1536 * KiB + 512 * k, (k + 1) * 1536 * KiB + 512 * k - 512))),
      `${name}: a queue reads the same bytes`,
    );
  }
});

/** A small seeded generator, so a failure can be run again. */
function random(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (x + 0x6d2b79f5) >>> 0;
    let y = Math.imul(x ^ (x >>> 15), 1 | x);
    y ^= y + Math.imul(y ^ (y >>> 7), 61 | y);
    return ((y ^ (y >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * Random writes, write-zeroes, discards, flushes and reads from two queues,
 * never two overlapping requests in flight at once; a model of the disk
 * follows them (a discarded range becomes what the device then reads).
 */
async function workload(c: TargetClient, model: Buffer, seed: number, count: number): Promise<void> {
  const rnd = random(seed);
  let batch: Promise<unknown>[] = [];
  let ranges: [number, number][] = [];
  for (let i = 0; i < count; i++) {
    const len = (1 + Math.floor(rnd() * (rnd() < 0.2 ? 1024 : 64))) * 512;
    const off = Math.floor((rnd() * (model.length - len)) / 512) * 512;
    if (batch.length >= 12 || ranges.some(([a, b]) => off < b && a < off + len)) {
      await Promise.all(batch);
      batch = [];
      ranges = [];
    }
    ranges.push([off, off + len]);
    const qId = i % c.queues;
    const kind = rnd();
    if (kind < 0.65) {
      const data = Buffer.alloc(len);
      for (let j = 0; j < len; j += 4) data.writeUInt32LE((i << 20) ^ j, j);
      data.copy(model, off);
      batch.push(c.write(off, data, { qId, fua: rnd() < 0.05 }));
    } else if (kind < 0.75) {
      model.fill(0, off, off + len);
      batch.push(c.writeZeroes(off, len, { qId, noUnmap: rnd() < 0.5 }));
    } else if (kind < 0.82) {
      batch.push(c.discard(off, len, qId).then(async () => (await c.read(off, len, qId)).copy(model, off)));
    } else if (kind < 0.87) {
      batch.push(c.flush(qId));
    } else {
      const want = Buffer.from(model.subarray(off, off + len));
      batch.push(
        c.read(off, len, qId).then((got) => {
          if (!got.equals(want)) throw new Error(`request ${i}: a read of ${len} bytes at ${off} differs from what was written`);
        }),
      );
    }
  }
  await Promise.all(batch);
}

const writable: [string, string[]][] = [
  ['v3, 64 KiB clusters', ['create', '-q', '-f', 'qcow2', 'w.qcow2', '8M']],
  ['v2', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'w.qcow2', '8M']],
  ['512 B clusters (the refcount table grows)', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'w.qcow2', '8M']],
  ['2 MiB clusters', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', 'w.qcow2', '8M']],
  ['refcount_bits=1', ['create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=1', 'w.qcow2', '8M']],
  ['refcount_bits=64, 4 KiB clusters (new refcount blocks)', ['create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=64,cluster_size=4096', 'w.qcow2', '8M']],
  ['over a qcow2 backing file', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'w.qcow2']],
  ['v2, 4 KiB clusters, over a raw backing file', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10,cluster_size=4096', '-b', 'base.raw', '-F', 'raw', 'w.qcow2']],
  ['compressed (deflate)', ['convert', '-c', '-O', 'qcow2', 'base.raw', 'w.qcow2']],
  ['compressed (zstd)', ['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', 'base.raw', 'w.qcow2']],
  ['lazy refcounts', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'w.qcow2', '8M']],
  ['fully preallocated', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=full', 'w.qcow2', '8M']],
];

t.test('two queues write, zero, discard and flush: the device reads what was written, and qemu-img agrees', async (t) => {
  for (const [k, [name, make]] of writable.entries()) {
    qemu('qemu-img', ...make);
    const model = asRaw(p('w.qcow2'));
    const c = await TargetClient.open(qcow2, { file: p('w.qcow2') }, { queues: 2, depth: 8 });
    await workload(c, model, 1000 + k, 400);
    const seen = await c.read(0, model.length);
    await c.close();
    t.ok(seen.equals(model), `${name}: the device reads what was written`);
    t.equal(check(p('w.qcow2')), 'No errors were found on the image.', `${name}: qemu-img check`);
    t.ok(asRaw(p('w.qcow2')).equals(model), `${name}: qemu-img convert reads the same`);
  }
});

t.test('two queues writing neighbouring blocks of the same unallocated clusters at once', async (t) => {
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'race.qcow2');
  const model = Buffer.from(base);
  const c = await TargetClient.open(qcow2, { file: p('race.qcow2') }, { queues: 2, depth: 16 });
  // Each 64 KiB cluster gets its 16 blocks written by both queues at once, all in flight together.
  const writes: Promise<void>[] = [];
  for (let cluster = 0; cluster < 32; cluster++) {
    for (let b = 0; b < 16; b++) {
      const off = cluster * 64 * KiB + b * 4 * KiB;
      const data = Buffer.alloc(4 * KiB, (cluster * 16 + b) & 255);
      data.copy(model, off);
      writes.push(c.write(off, data, { qId: b & 1 }));
    }
  }
  await Promise.all(writes);
  const seen = await c.read(0, SIZE);
  const stats = c.device.stats!([]) as { qcow2: { waitedForAllocation: number; copiedOnWrite: number } };
  await c.close();
  t.ok(seen.equals(model), 'every block holds its own write, the rest of each cluster its backing file');
  t.ok(stats.qcow2.waitedForAllocation > 0, `requests waited for another's allocation (${stats.qcow2.waitedForAllocation})`);
  t.equal(check(p('race.qcow2')), 'No errors were found on the image.');
  t.ok(asRaw(p('race.qcow2')).equals(model), 'qemu-img convert reads the same');
});

t.test('a write to a read-only device fails; reads of an image with snapshots work read-only', async (t) => {
  qemu('qemu-img', 'convert', '-O', 'qcow2', 'base.raw', 'snap.qcow2');
  qemu('qemu-img', 'snapshot', '-c', 'before', 'snap.qcow2');
  qemu('qemu-io', '-c', 'write -P 0x99 0 1M', 'snap.qcow2');
  const want = asRaw(p('snap.qcow2'));
  const c = await TargetClient.open(qcow2, { file: p('snap.qcow2'), readOnly: true });
  t.ok((await c.read(0, SIZE)).equals(want), 'the active state reads');
  const err = await c.write(0, Buffer.alloc(4096)).catch((e: { result?: number }) => e);
  t.equal((err as { result?: number }).result, -9, 'a write fails with EBADF');
  await c.close();
});

/** The one line open() throws for `image`, or '' when it opens. */
async function refusal(image: string, readOnly = false): Promise<string> {
  try {
    const c = await TargetClient.open(qcow2, { file: p(image), readOnly });
    await c.close();
    return '';
  } catch (e) {
    if (!(e instanceof TargetError)) throw e;
    return e.message;
  }
}

function patchHeader(image: string, change: (header: Buffer) => void): void {
  const bytes = readFileSync(p(image));
  change(bytes);
  writeFileSync(p(image), bytes);
}

t.test('images it cannot serve safely are refused with one line', async (t) => {
  // (qemu-img cannot make a LUKS image where it cannot time its key derivation: the header says LUKS.)
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', 'luks.qcow2', '1M');
  patchHeader('luks.qcow2', (h) => h.writeUInt32BE(2, 32)); // crypt_method
  t.match(await refusal('luks.qcow2', true), /luks\.qcow2: it is encrypted \(LUKS\); decrypt it with qemu-img convert$/);
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', `data_file=${p('data.raw')}`, 'ext.qcow2', '1M');
  t.match(await refusal('ext.qcow2', true), /ext\.qcow2: its data lives in an external data file$/);
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', 'l2.qcow2', '1M');
  t.match(await refusal('l2.qcow2', true), /l2\.qcow2: it has extended L2 entries/);

  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', 'future.qcow2', '1M');
  patchHeader('future.qcow2', (h) => h.writeUInt32BE(h.readUInt32BE(76) | (1 << 20), 76)); // incompatible bit 20
  t.match(await refusal('future.qcow2', true), /future\.qcow2: it uses incompatible features ublk-ts does not know \(bit 20\)$/);

  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', 'corrupt.qcow2', '1M');
  patchHeader('corrupt.qcow2', (h) => h.writeUInt32BE(h.readUInt32BE(76) | 2, 76)); // the corrupt bit
  t.match(await refusal('corrupt.qcow2'), /qemu marked it corrupt; repair it with qemu-img check -r all, or serve it with --read-only$/);
  t.equal(await refusal('corrupt.qcow2', true), '', 'read-only, a corrupt image is served');

  qemu('qemu-img', 'convert', '-O', 'qcow2', 'base.raw', 'snaps.qcow2');
  qemu('qemu-img', 'snapshot', '-c', 's1', 'snaps.qcow2');
  t.match(await refusal('snaps.qcow2'), /snaps\.qcow2: it has 1 internal snapshot\(s\), which ublk-ts does not write around; serve it with --read-only$/);
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', 'bitmap.qcow2', '1M');
  qemu('qemu-img', 'bitmap', '--add', 'bitmap.qcow2', 'b0');
  t.match(await refusal('bitmap.qcow2'), /bitmap\.qcow2: it has persistent dirty bitmaps/);
  t.equal(await refusal('bitmap.qcow2', true), '');

  t.match(await refusal('base.raw'), /base\.raw is not a qcow2 image/);
  t.match(await refusal('missing.qcow2'), /missing\.qcow2: No such file or directory$/);
  qemu('qemu-img', 'create', '-q', '-u', '-f', 'qcow2', '-b', 'gone.qcow2', '-F', 'qcow2', 'orphan.qcow2', '1M');
  t.match(await refusal('orphan.qcow2'), /gone\.qcow2: No such file or directory$/);
  qemu('qemu-img', 'create', '-q', '-f', 'vmdk', 'disk.vmdk', '1M');
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'disk.vmdk', '-F', 'vmdk', 'onvmdk.qcow2', '1M');
  t.match(await refusal('onvmdk.qcow2'), /disk\.vmdk: backing format 'vmdk' is not supported \(qcow2 and raw are\)$/);
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', 'loop1.qcow2', '1M');
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'loop1.qcow2', '-F', 'qcow2', 'loop2.qcow2', '1M');
  qemu('qemu-img', 'rebase', '-u', '-b', 'loop2.qcow2', '-F', 'qcow2', 'loop1.qcow2');
  t.match(await refusal('loop2.qcow2'), /loop2\.qcow2: its backing chain loops back to /);
});

t.test('a qcow2 image is the device of one writer: a second open for writing is refused', async (t) => {
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', 'one.qcow2', '1M');
  const c = await TargetClient.open(qcow2, { file: p('one.qcow2') });
  t.match(await refusal('one.qcow2'), /one\.qcow2 is already used by another ublk-ts device/);
  await c.close();
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'one.qcow2', '-F', 'qcow2', 'a.qcow2');
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'one.qcow2', '-F', 'qcow2', 'b.qcow2');
  const a = await TargetClient.open(qcow2, { file: p('a.qcow2') });
  t.equal(await refusal('b.qcow2'), '', 'two images over one backing file');
  await a.close();
});

t.test("qemu's image lock: qemu-img does not touch an image being served, and an image qemu has open is refused", async (t) => {
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', 'locked.qcow2', '1M');
  const c = await TargetClient.open(qcow2, { file: p('locked.qcow2') });
  for (const args of [['qemu-img', 'check', 'locked.qcow2'], ['qemu-io', '-c', 'write 0 4k', 'locked.qcow2']]) {
    let stderr = '';
    try {
      qemu(args[0], ...args.slice(1));
    } catch (e) {
      stderr = String((e as { stderr?: string }).stderr);
    }
    t.match(stderr, /Failed to get .*lock/, `${args.join(' ')} is refused while the device serves the image`);
  }
  await c.close();
  t.equal(check(p('locked.qcow2')), 'No errors were found on the image.', 'qemu-img check works once the device is gone');

  const holder = await holdWithQemuIo(p('locked.qcow2'), 'qcow2');
  try {
    t.match(await refusal('locked.qcow2', true), /locked\.qcow2 is in use by another program that holds its qemu image lock .* and writes it/, 'read-only: refused while qemu-io writes it');
    t.match(await refusal('locked.qcow2'), /locked\.qcow2 is in use by another program that holds its qemu image lock/, 'writable: refused too');
  } finally {
    holder.kill('SIGKILL');
  }
});
