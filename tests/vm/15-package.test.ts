// Issue 9: the packed tarball, installed in an empty directory (by
// tests/pack-install, before the VM starts: the VM has no network), serves a device.
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, cleanup, sh, snapshot } from '../lib/ublk.js';

t.teardown(cleanup);

const app = join(ROOT, '.cache/pack/app');

t.test('npx ublk add -t null -s 1G from the installed package', async (t) => {
  t.ok(existsSync(join(app, 'node_modules/ublk-ts/package.json')), `${app} holds the installed package (tests/pack-install)`);
  const before = snapshot();
  const add = sh('npx --no-install ublk add -t null -s 1G --json', { cwd: app });
  t.equal(add.code, 0, add.stderr);
  const dev = JSON.parse(add.stdout) as { id: number; blockDevice: string };
  t.equal(sh(`blockdev --getsize64 ${dev.blockDevice}`).stdout.trim(), '1073741824');
  t.match(sh('npx --no-install ublk list', { cwd: app }).stdout, /LIVE/);
  t.equal(sh(`npx --no-install ublk del -n ${dev.id}`, { cwd: app }).code, 0);
  t.same(snapshot(), before);
});
