// Issue 4: bad input gets one clear line and exit 1, and leaves nothing behind.
import t from 'tap';
import { addDevice, cleanup, snapshot, ublk, ublkAsNobody } from '../lib/ublk.js';

t.teardown(cleanup);

const cases: [string, string[], RegExp][] = [
  ['depth 0', ['add', '-t', 'null', '-s', '1G', '-d', '0'], /depth must be between 1 and 4096/],
  ['depth 4097', ['add', '-t', 'null', '-s', '1G', '-d', '4097'], /depth must be between 1 and 4096/],
  ['queues 0', ['add', '-t', 'null', '-s', '1G', '-q', '0'], /queues must be between 1 and 4096/],
  ['queues 4097', ['add', '-t', 'null', '-s', '1G', '-q', '4097'], /queues must be between 1 and 4096/],
  ['id out of range', ['add', '-t', 'null', '-s', '1G', '-n', '1048576'], /device id must be between 0 and 1048575/],
  ['size 0', ['add', '-t', 'null', '-s', '0'], /size must be more than 0 bytes/],
  ['size not a multiple of 512', ['add', '-t', 'null', '-s', '1000'], /not a multiple of 512/],
  ['no size', ['add', '-t', 'null'], /needs a size/],
  ['unknown target', ['add', '-t', 'floppy', '-s', '1G'], /unknown target 'floppy'/],
  ['unknown option', ['add', '-t', 'null', '-s', '1G', '--frobnicate'], /unknown option '--frobnicate'/],
  ['del of an unknown id', ['del', '-n', '999'], /device 999 does not exist/],
];

for (const [name, args, message] of cases) {
  t.test(`${name}: one line, exit 1, nothing created`, async (t) => {
    const before = snapshot();
    const r = ublk(...args);
    t.equal(r.code, 1);
    t.match(r.stderr, message);
    t.match(r.stderr, /^ublk: [a-z]+: [^\n]+\n$/, 'exactly one line, no stack');
    t.equal(r.stdout, '');
    t.same(snapshot(), before);
  });
}

t.test('an id that is already used', async (t) => {
  const dev = addDevice('-t', 'null', '-s', '64M');
  const before = snapshot();
  const r = ublk('add', '-t', 'null', '-s', '64M', '-n', String(dev.id));
  t.equal(r.code, 1);
  t.equal(r.stderr, `ublk: add: device ${dev.id} already exists\n`);
  t.same(snapshot(), before, 'the first device is untouched and nothing was added');
  t.equal(ublk('del', '-n', String(dev.id)).code, 0);
});

t.test('not root', async (t) => {
  const before = snapshot();
  const r = ublkAsNobody('add', '-t', 'null', '-s', '1G');
  t.equal(r.code, 1, 'add as nobody fails');
  t.match(r.stderr, /^ublk: add: must be run as root[^\n]*\n$/);
  // A user sees and deletes only the devices they added with --unprivileged: none here.
  for (const cmd of [['list'], ['del', '-a']]) t.match(ublkAsNobody(...cmd), { code: 0, stdout: '', stderr: '' }, `${cmd.join(' ')} as nobody: nothing of root's`);
  t.same(snapshot(), before);
});
