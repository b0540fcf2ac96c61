// Issue 6: an unusable backing file gets one clear line, exit 1, and nothing is created.
import t from 'tap';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { addDevice, cleanup, scratchDir, sh, snapshot, ublk } from '../lib/ublk.js';

t.teardown(cleanup);

const dir = join(scratchDir(), 'bad-backing');
mkdirSync(dir, { recursive: true });
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ok = join(dir, 'ok.img');
sh(`truncate -s 64M ${ok}`);
const readOnly = join(dir, 'ro.img');
sh(`truncate -s 64M ${readOnly}`);
chmodSync(readOnly, 0o444);
writeFileSync(join(dir, 'empty.img'), '');
writeFileSync(join(dir, 'odd.img'), Buffer.alloc(1000));

const cases: [string, string[], RegExp][] = [
  ['missing file', ['-f', join(dir, 'nope.img')], /nope\.img: No such file or directory/],
  ['a directory', ['-f', dir], /is a directory/],
  ['a read-only file without --read-only', ['-f', readOnly], /is read-only \(use --read-only/],
  ['an empty file', ['-f', join(dir, 'empty.img')], /is empty/],
  ['a size that is not a multiple of 512', ['-f', join(dir, 'odd.img')], /not a multiple of the logical block size/],
  ['no file', [], /needs a backing file/],
  ['an unknown engine', ['-f', ok, '--engine', 'floppy'], /--engine must be one of aio, uring, not 'floppy'/],
];

for (const [name, args, message] of cases) {
  t.test(`${name}: one line, exit 1, nothing created`, async (t) => {
    const before = snapshot();
    const r = ublk('add', '-t', 'loop', ...args);
    t.equal(r.code, 1);
    t.match(r.stderr, message);
    t.match(r.stderr, /^ublk: add: [^\n]+\n$/, 'one line');
    t.same(snapshot(), before);
  });
}

t.test('a file already served by another device', async (t) => {
  const dev = addDevice('-t', 'loop', '-f', ok);
  const before = snapshot();
  const r = ublk('add', '-t', 'loop', '-f', ok);
  t.equal(r.code, 1);
  t.match(r.stderr, new RegExp(`ok\\.img is already used by ublk device ${dev.id}`));
  t.same(snapshot(), before);
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
});

t.test('--read-only serves a read-only file and refuses writes', async (t) => {
  const dev = addDevice('-t', 'loop', '-f', readOnly, '--read-only');
  t.equal(sh(`blockdev --getro ${dev.blockDevice}`).stdout.trim(), '1', 'the kernel marks the device read-only');
  t.equal(sh(`dd if=${dev.blockDevice} of=/dev/null bs=1M count=4 iflag=direct status=none`).code, 0, 'reads work');
  t.not(sh(`dd if=/dev/zero of=${dev.blockDevice} bs=4k count=1 oflag=direct status=none`).code, 0, 'writes fail');
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
});
