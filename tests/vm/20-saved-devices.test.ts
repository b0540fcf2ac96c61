// Issue 19: saved devices come back with `ublk up`, are named by
// /dev/disk/by-ublk/NAME, and tell systemd (sd_notify) they are ready only
// once LIVE. No systemd runs in the test VM (its init is tests/vm/guest-init),
// so the protocol is checked against a notification socket of the test's own.
import t from 'tap';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NotifySocket } from '../lib/notify-socket.js';
import { BIN, background, checkExt4, cleanup, fillExt4, processAlive, scratchDir, sh, snapshot, ublk, waitFor } from '../lib/ublk.js';

const etc = mkdtempSync('/tmp/ublk-etc-');
process.env.UBLK_TS_CONFIG_DIR = etc; // /etc is the host's, read-only in the VM
const LINKS = '/dev/disk/by-ublk';
const saved = (name: string) => join(etc, 'devices', `${name}.json`);
const mnt = '/run/ublk-test-mnt';

t.teardown(() => {
  sh(`umount ${mnt} 2>/dev/null`);
  cleanup();
  rmSync(etc, { recursive: true, force: true });
});

interface Listed {
  id: number;
  name: string | null;
  state: string;
  pid: number;
}
function listed(): Listed[] {
  const r = ublk('list', '--json');
  return r.code === 0 ? (JSON.parse(r.stdout) as Listed[]) : [];
}
function upAs(name: string): Listed | undefined {
  return listed().find((d) => d.name === name);
}

t.test('a saved device comes back with `ublk up` after its daemon and device are gone; its files are intact', async (t) => {
  const img = join(scratchDir(), 'saved.img');
  sh(`truncate -s 256M ${img}`);
  mkdirSync(mnt, { recursive: true });
  t.teardown(() => rmSync(img, { force: true }));

  const add = ublk('add', '-t', 'loop', '-f', img, '-q', '2', '--save', 'data', '--json');
  t.equal(add.code, 0, `add --save: ${add.stderr}`);
  const dev = JSON.parse(add.stdout) as { id: number; pid: number; name: string; link: string };
  t.match(dev, { name: 'data', link: `${LINKS}/data` });
  t.match(JSON.parse(readFileSync(saved('data'), 'utf8')), { type: 'loop', file: img, queues: 2 }, 'the options are saved');
  t.equal(readlinkSync(`${LINKS}/data`), `../../ublkb${dev.id}`, 'the link names the device');
  t.match(ublk('list').stdout, new RegExp(`^${dev.id} +data +LIVE`, 'm'), 'list shows the name');

  const sums = fillExt4(t, `${LINKS}/data`, mnt); // through the link

  // The daemon dies, then the device goes: nothing of it is left but the saved file.
  process.kill(dev.pid, 'SIGKILL');
  t.ok(await waitFor(() => !processAlive(dev.pid), 10_000), 'the daemon is gone');
  t.equal(ublk('del', '-n', String(dev.id)).code, 0, 'del the orphaned device');
  t.notOk(existsSync(`${LINKS}/data`), 'del removed the link the dead daemon left');
  t.equal(upAs('data'), undefined, 'no device is named data');
  t.match(ublk('list').stdout, /^saved, not up: data \(ublk up NAME\)$/m, 'list shows it saved, not up');

  const up = ublk('up', 'data');
  t.equal(up.code, 0, `up: ${up.stderr}`);
  const back = upAs('data');
  t.equal(back?.state, 'LIVE', 'the device is back, named data');
  t.equal(readlinkSync(`${LINKS}/data`), `../../ublkb${back?.id}`, 'the link names it');
  checkExt4(t, `${LINKS}/data`, mnt, sums);
  const fsck = sh(`e2fsck -fn ${LINKS}/data`);
  t.equal(fsck.code, 0, `e2fsck -fn is clean after the daemon's death: ${fsck.stdout}`);

  t.match(ublk('up', 'data'), { code: 0, stdout: `'data' is up already as /dev/ublkb${back?.id}\n` }, 'up again leaves it');
  t.equal(ublk('down', 'data').code, 0, 'down');
  t.equal(upAs('data'), undefined, 'the device is gone');
  t.notOk(existsSync(`${LINKS}/data`), 'and its link');
  t.ok(existsSync(saved('data')), 'its saved options stay');
  rmSync(saved('data'));
});

t.test('sd_notify: READY=1 comes once the device is LIVE; SIGTERM sends STOPPING=1 and deletes the device', async (t) => {
  writeFileSync(join(etc, 'devices', 'fast.json'), JSON.stringify({ type: 'null', size: '1G' }));
  t.teardown(() => rmSync(saved('fast'), { force: true }));
  const sock = new NotifySocket(join(etc, 'notify'));
  t.teardown(() => sock.close());
  process.env.NOTIFY_SOCKET = sock.path;
  const daemon = background(process.execPath, [BIN, 'up', 'fast', '--foreground']);
  delete process.env.NOTIFY_SOCKET;

  // Polled every few ms: what the device is at the moment READY=1 arrives.
  let ready: string[] | null = null;
  let atReady = { link: false, disk: false };
  await waitFor(() => {
    for (const m of sock.take()) {
      if (!m.includes('READY=1')) continue;
      ready = m;
      const target = existsSync(`${LINKS}/fast`) ? readlinkSync(`${LINKS}/fast`) : '';
      atReady = { link: target !== '', disk: existsSync(`/sys/block/${target.replace('../../', '')}`) };
    }
    return ready !== null;
  }, 60_000);
  t.ok(ready, 'READY=1 arrived');
  t.same(atReady, { link: true, disk: true }, 'then, the block device and its link exist');
  const d = upAs('fast');
  t.equal(d?.state, 'LIVE', 'the device is LIVE');
  t.same(ready, ['READY=1', `MAINPID=${d?.pid}`, `STATUS=serving /dev/ublkb${d?.id}`], 'READY=1, the serving process, and which device');
  t.equal(sh(`dd if=/dev/zero of=${LINKS}/fast bs=1M count=8 oflag=direct status=none`).code, 0, 'IO through the link');

  process.kill(d!.pid, 'SIGTERM'); // what `systemctl stop` does
  const r = await daemon.done;
  t.equal(r.code, 0, `the foreground daemon exits 0 ${r.stderr}`);
  t.match(sock.take(), [['STOPPING=1', 'STATUS=stopping: SIGTERM']], 'STOPPING=1 came');
  t.equal(upAs('fast'), undefined, 'the device is deleted');
  t.notOk(existsSync(`${LINKS}/fast`), 'and its link');
});

t.test('save a running device, up --all, down --all', async (t) => {
  const before = snapshot();
  const add = ublk('add', '-t', 'mem', '-s', '64M', '--json');
  t.equal(add.code, 0, add.stderr);
  const id = (JSON.parse(add.stdout) as { id: number }).id;
  t.equal(ublk('save', '-n', String(id), 'scratch').code, 0, 'save -n ID NAME');
  t.match(JSON.parse(readFileSync(saved('scratch'), 'utf8')), { type: 'mem', size: 64 * 2 ** 20 });
  t.equal(readlinkSync(`${LINKS}/scratch`), `../../ublkb${id}`, 'the running device is linked');
  t.equal(ublk('save', '-n', String(id), 'scratch').stderr, `ublk: save: a device named 'scratch' is saved already (${saved('scratch')}; --force replaces it)\n`);
  writeFileSync(saved('other'), JSON.stringify({ type: 'null', size: '1G', queues: 2 }));
  const all = ublk('up', '--all');
  t.equal(all.code, 0, `up --all ${all.stderr}`);
  t.match(all.stdout, `'scratch' is up already as /dev/ublkb${id}`);
  t.match(upAs('other'), { state: 'LIVE' }, 'the other came up');
  t.equal(ublk('down', '--all').code, 0, 'down --all');
  t.same(snapshot(), before, 'nothing is left');
  rmSync(saved('scratch'));
  rmSync(saved('other'));
});

t.test('bad input: one line, exit 1, no device, no daemon, no saved file', async (t) => {
  const before = snapshot();
  writeFileSync(saved('taken'), JSON.stringify({ type: 'null', size: '1G' }));
  writeFileSync(saved('broken'), JSON.stringify({ type: 'null', size: '1G', queues: -2 }));
  const cases: [string[], string | RegExp][] = [
    [['add', '-t', 'null', '-s', '1G', '--save', 'taken'], `ublk: add: a device named 'taken' is saved already (${saved('taken')})\n`],
    [['add', '-t', 'loop', '-f', '/nonexistent.img', '--save', 'nofile'], /^ublk: add: .*\/nonexistent\.img: No such file or directory\n$/],
    [['up', 'broken'], `ublk: up: ${saved('broken')}: field 'queues' must be an integer between 1 and 4096, not -2\n`],
    [['down', 'nosuch'], "ublk: down: no device named 'nosuch'\n"],
    [['up', 'taken', 'broken', '--foreground'], 'ublk: up: --foreground serves one device: name one\n'],
  ];
  for (const [args, line] of cases) {
    const r = ublk(...args);
    t.equal(r.code, 1, `ublk ${args.join(' ')} exits 1`);
    if (typeof line === 'string') t.equal(r.stderr, line, args.join(' '));
    else t.match(r.stderr, line, args.join(' '));
  }
  t.notOk(existsSync(saved('nofile')), 'a device that did not start is not saved');
  const some = ublk('up', 'taken', 'broken');
  t.equal(some.code, 1, 'up of a good and a broken device exits 1');
  t.match(some.stderr, `ublk: up: broken: ${saved('broken')}: field 'queues'`, 'naming the broken one');
  t.equal(upAs('taken')?.state, 'LIVE', 'and starts the good one');
  t.equal(ublk('down', 'taken').code, 0);
  t.same(snapshot(), before, 'nothing is left');
});
