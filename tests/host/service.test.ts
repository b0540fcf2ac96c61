// What running as a service needs and no ublk_drv: sd_notify, saved device
// files and their checks, the systemd unit.
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sdNotify } from '../../tools/sd-notify.js';
import { checkSaved, readSaved, writeSaved } from '../../tools/saved.js';
import { NotifySocket } from '../lib/notify-socket.js';
import { BIN, sh, ublk } from '../lib/ublk.js';

const dir = mkdtempSync(join(tmpdir(), 'ublk-service-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('sd_notify sends one datagram of lines to $NOTIFY_SOCKET, path or abstract', async (t) => {
  for (const path of [join(dir, 'notify'), `@ublk-ts-test-${process.pid}`]) {
    const s = new NotifySocket(path);
    t.teardown(() => s.close());
    t.equal(sdNotify(['READY=1', 'STATUS=serving /dev/ublkb3'], path), true);
    t.equal(sdNotify(['STOPPING=1'], path), true);
    t.same(s.take(), [['READY=1', 'STATUS=serving /dev/ublkb3'], ['STOPPING=1']], path);
  }
  t.equal(sdNotify(['READY=1'], undefined), false, 'no $NOTIFY_SOCKET: nothing to tell');
  t.throws(() => sdNotify(['READY=1'], join(dir, 'nobody-listens')), { code: 'ENOENT', syscall: 'sendto' });
});

t.test('a saved device: written with absolute paths, read back as add would run it', async (t) => {
  process.env.UBLK_TS_CONFIG_DIR = join(dir, 'etc');
  t.teardown(() => delete process.env.UBLK_TS_CONFIG_DIR);
  const path = writeSaved('data', { type: 'loop', file: 'disk.img', queues: 2, depth: 64, number: -1, maxIoSize: '1M', scheduler: 'none', recoverable: true });
  t.equal(path, join(dir, 'etc/devices/data.json'));
  const saved = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  t.equal(saved.file, join(process.cwd(), 'disk.img'), 'the file as an absolute path');
  t.match(readSaved('data'), { name: 'data', target: 'loop', queues: 2, depth: 64, devId: -1, maxIoSize: 2 ** 20, recoverable: true, targetOptions: { file: saved.file } });
  t.match(checkSaved({ type: 'null', size: '1G' }, 'x'), { target: 'null', queues: 1, depth: 128, devId: -1, maxIoSize: 512 * 1024, scheduler: 'none', targetOptions: { size: 2 ** 30 } }, 'defaults as add has them');
});

t.test('a broken saved device is one line naming the file and the field', async (t) => {
  const cases: [unknown, string][] = [
    [{ type: 'loop', file: '/x.img', queues: 0 }, "field 'queues' must be an integer between 1 and 4096, not 0"],
    [{ type: 'loop', file: 'x.img' }, `field 'file' must be an absolute path, not "x.img"`],
    [{ type: 'null', size: '1000' }, "field 'size' size 1000 is not a multiple of 512 bytes, not \"1000\""],
    [{ type: 'null', size: '1G', colour: 'red' }, "unknown field 'colour'"],
    [{ size: '1G' }, "field 'type' is missing"],
    [{ type: 'null', size: '1G', maxIoSize: '6K' }, 'max IO size must be a multiple of 4K between 4K and 32M, not 6K'],
    [{ type: 'nvme', size: '1G' }, "unknown target 'nvme'"],
    [[1, 2], 'not a JSON object'],
  ];
  for (const [raw, why] of cases) t.throws(() => checkSaved(raw, '/etc/ublk-ts/devices/d.json'), { message: new RegExp(`^/etc/ublk-ts/devices/d\\.json: ${why.replace(/[.*()[\]]/g, '\\$&')}`) }, why);

  // The CLI: `ublk up` of a broken or missing file, before it needs ublk_drv.
  const etc = join(dir, 'etc-cli');
  mkdirSync(join(etc, 'devices'), { recursive: true });
  writeFileSync(join(etc, 'devices/bad.json'), '{"type": "loop", "file": "/x.img", "depth": "deep"}\n');
  writeFileSync(join(etc, 'devices/torn.json'), '{"type": "lo');
  const env = `UBLK_TS_CONFIG_DIR=${etc}`;
  const up = (name: string) => sh(`${env} ${process.execPath} ${BIN} up ${name}`);
  for (const [name, line] of [
    ['bad', `ublk: up: ${etc}/devices/bad.json: field 'depth' must be an integer between 1 and 4096, not "deep"\n`],
    ['nosuch', `ublk: up: no saved device named 'nosuch' (${etc}/devices/nosuch.json)\n`],
    ['../x', "ublk: up: a device name is 1-64 letters, digits, '_', '.' or '-' (not first), not '../x'\n"],
  ]) {
    const r = up(name);
    t.equal(r.code, 1, `up ${name} exits 1`);
    t.equal(r.stderr, line);
  }
  t.match(up('torn').stderr, new RegExp(`^ublk: up: ${etc}/devices/torn.json: not JSON \\(.*\\)\\n$`));
  t.equal(ublk('up').stderr, 'ublk: up: say which saved devices: NAME…, or --all\n');
  t.equal(ublk('add', '-t', 'null', '-s', '1G', '--save', 'a/b').stderr, "ublk: add: a device name is 1-64 letters, digits, '_', '.' or '-' (not first), not 'a/b'\n");
});

t.test('install-units writes a unit systemd accepts: Type=notify, this node and CLI, up --foreground', async (t) => {
  const units = join(dir, 'units');
  const r = ublk('install-units', '--dir', units);
  t.equal(r.code, 0, r.stderr);
  const text = readFileSync(join(units, 'ublk-ts@.service'), 'utf8');
  t.match(text, /^Type=notify$/m);
  t.match(text, new RegExp(`^ExecStart=${process.execPath} /.*/bin/ublk up %i --foreground$`, 'm'));
  writeFileSync(join(units, 'ublk-ts@data.service'), text);
  const v = sh(`systemd-analyze verify --man=no ${units}/ublk-ts@data.service`);
  t.equal(v.stderr.split('\n').filter((l) => l.includes('ublk-ts@')).join('\n'), '', 'systemd-analyze verify finds nothing wrong in the unit');
});
