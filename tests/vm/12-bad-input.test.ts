// Issue 8: bad input across all commands. Each case: one clear line on stderr,
// a non-zero exit, and the devices, state files and daemons are as they were.
import t from 'tap';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RUN_DIR, addDevice, cleanup, processAlive, scratchDir, sh, snapshot, ublk, ublkAsNobody, waitFor } from '../lib/ublk.js';

t.teardown(cleanup);

const dir = join(scratchDir(), 'bad-input');
mkdirSync(dir, { recursive: true });
const img = join(dir, 'ok.img');
sh(`truncate -s 64M ${img} ${join(dir, 'ok2.img')}`);

// A live null device, a --recoverable device whose daemon is gone, and a stale state file.
const live = addDevice('-t', 'null', '-s', '64M');
const orphan = addDevice('-t', 'loop', '-f', join(dir, 'ok2.img'), '--recoverable');
process.kill(orphan.pid, 'SIGKILL');
const STALE = 777;
mkdirSync(RUN_DIR, { recursive: true });
writeFileSync(
  join(RUN_DIR, `${STALE}.json`),
  JSON.stringify({ id: STALE, pid: 999999, target: 'null', targetModule: 'x', targetOptions: {}, queues: 1, depth: 1, maxIoSize: 4096, recoverable: true, pollMaxNs: 0, size: 4096, info: {}, created: '' }),
);
t.teardown(() => {
  rmSync(join(RUN_DIR, `${STALE}.json`), { force: true });
  rmSync(dir, { recursive: true, force: true });
});

const L = String(live.id);
const O = String(orphan.id);
const table: [string[], RegExp][] = [
  [['add', '-t', 'null', '-s', '1G', '-q', 'abc'], /queues must be an integer, not 'abc'/],
  [['add', '-t', 'null', '-s', '1G', '-d', '-1'], /depth must be between 1 and 4096, not -1/],
  [['add', '-t', 'null', '-s', '1G', '--max-io-size', '0'], /max IO size must be more than 0 bytes/],
  [['add', '-t', 'null', '-s', '1G', '--max-io-size', '6K'], /max IO size must be a multiple of 4K/],
  [['add', '-t', 'null', '-s', '1G', '--max-io-size', '64M'], /max IO size must be a multiple of 4K between 4K and 32M/],
  [['add', '-t', 'null', '-s', '1X'], /size '1X' is not a size/],
  [['add', '-t', 'null', '-s', '1G', '--poll-max-ns', '-5'], /poll-max-ns must be between 0 and/],
  // Checked by the kernel once the disk exists: the new device must go again.
  [['add', '-t', 'null', '-s', '1G', '--scheduler', 'bogus'], /IO scheduler 'bogus' is not available for \/dev\/ublkb\d+ \(it has: none/],
  [['add', '-t', 'null', '-s', '1G', '-n', L], new RegExp(`device ${L} already exists`)],
  [['add', '-t', 'loop'], /needs a backing file/],
  [['add', '-t', 'loop', '-f', join(dir, 'missing.img')], /missing\.img: No such file or directory/],
  [['add', '-t', 'loop', '-f', '/dev/null'], /is not a regular file or block device/],
  [['add', '-t', 'loop', '-f', join(dir, 'ok2.img')], new RegExp(`ok2\\.img is already used by ublk device ${O}`)],
  [['add', '-t', 'null', '-s', '1G', '-n', '64'], /device id 64 is beyond ublk_drv's ublks_max \(64;/],
  [['add', '-t', join(dir, 'no-such-target.js'), '-s', '1G'], /cannot load target module/],
  [['add', '-t', 'null', '-s', '1G', 'extra'], /too many arguments/],
  [['list', '-n', '999'], /device 999 does not exist/],
  [['list', '-n', 'abc'], /device id must be an integer/],
  [['del'], /say which device: -n ID, or -a for all/],
  [['del', '-n', '999'], /device 999 does not exist/],
  [['recover'], /required option '-n, --number <id>'/],
  [['recover', '-n', '999'], /device 999 has no ublk-ts state/],
  [['recover', '-n', L], new RegExp(`device ${L} was not added with --recoverable`)],
  [['recover', '-n', String(STALE)], new RegExp(`device ${STALE} does not exist`)],
  [['stats', '-n', '999'], /device 999 is not served by ublk-ts/],
  [['stats', '-n', O], new RegExp(`device ${O} has no running ublk-ts daemon`)],
  [['stats', '-n', L, '--watch', '0'], /seconds must be between 1 and 3600/],
  [['features', '--bogus'], /unknown option '--bogus'/],
  [['frobnicate'], /unknown command 'frobnicate'/],
];

t.test('the orphaned device is QUIESCED and the stale state has no daemon', async (t) => {
  t.ok(await waitFor(() => !processAlive(orphan.pid), 5000));
  t.ok(await waitFor(() => /QUIESCED/.test(ublk('list', '-n', O).stdout), 10000));
});

t.test(`${table.length} bad inputs: one line, exit 1, nothing changed`, async (t) => {
  t.ok(table.length >= 25);
  for (const [args, message] of table) {
    const before = snapshot();
    const r = ublk(...args);
    const what = `ublk ${args.join(' ')}`;
    t.equal(r.code, 1, `${what}: exit 1`);
    t.match(r.stderr, message, `${what}: says why`);
    t.match(r.stderr, /^ublk: [^\n]+\n$/, `${what}: one line`);
    t.same(snapshot(), before, `${what}: nothing changed`);
  }
});

t.test('not root: every command says so', async (t) => {
  const before = snapshot();
  for (const args of [['add', '-t', 'null', '-s', '1G'], ['recover', '-n', O], ['up', '--all'], ['install-units']]) {
    const r = ublkAsNobody(...args);
    t.equal(r.code, 1);
    t.match(r.stderr, /^ublk: [a-z-]+: must be run as root \(ublk devices need CAP_SYS_ADMIN\)\n$/);
  }
  // A user manages the devices they added with --unprivileged (tests/vm/22), no others.
  for (const args of [['del', '-n', L], ['stats', '-n', L], ['list', '-n', L]]) {
    const r = ublkAsNobody(...args);
    t.equal(r.code, 1);
    t.match(r.stderr, /^ublk: [a-z]+: must be run as root \(ublk devices need CAP_SYS_ADMIN; a user manages only the devices they added with --unprivileged\)\n$/);
  }
  t.match(ublkAsNobody('list'), { code: 0, stdout: '', stderr: '' }, 'a user who added no device lists none');
  const f = ublkAsNobody('features');
  t.equal(f.code, 1);
  t.equal(f.stderr, "ublk: features: /dev/ublk-control: Permission denied (a user's --unprivileged devices need udev's rule: ublk install-udev-rules; others need root)\n");
  t.same(snapshot(), before);
});

t.test("more devices than the driver's ublks_max", async (t) => {
  const param = '/sys/module/ublk_drv/parameters/ublks_max';
  const old = sh(`cat ${param}`).stdout.trim();
  const count = sh('ls /dev | grep -c "^ublkc"').stdout.trim();
  sh(`echo ${count} > ${param}`);
  t.teardown(() => sh(`echo ${old} > ${param}`));
  const before = snapshot();
  const r = ublk('add', '-t', 'null', '-s', '64M');
  t.equal(r.code, 1);
  t.match(r.stderr, /^ublk: add: too many ublk devices \(see \/sys\/module\/ublk_drv\/parameters\/ublks_max\)\n$/);
  t.same(snapshot(), before);
});
