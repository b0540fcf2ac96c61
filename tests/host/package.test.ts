// Issue 9: the npm package installs into an empty directory with a working CLI and typed API.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, sh } from '../lib/ublk.js';

t.test('npm pack, npm install in an empty directory: npx ublk --help and the typed API', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ublk-pack-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const app = join(dir, 'app');
  const install = sh(`${join(ROOT, 'tests/pack-install')} ${app}`, { timeout: 300_000 });
  t.equal(install.code, 0, `install: ${install.stderr}`);

  const help = sh('npx --no-install ublk --help', { cwd: app });
  t.equal(help.code, 0, help.stderr);
  t.match(help.stdout, /Usage: ublk/);
  t.match(help.stdout, /^  add\b/m);

  // A user's TypeScript: a target and a device, type-checked against the installed declarations.
  writeFileSync(
    join(app, 'use.mts'),
    `import { createDevice, EIO, UBLK_IO_OP_READ, type Device, type Target } from 'ublk-ts';
const t: Target<{ size: string }> = {
  name: 'zeros',
  sync: true,
  open: (o) => ({ size: 1 << 20, info: { size: o.size } }),
  createQueue: (ctx) => ({ queueIo: (tag, op, _f, _off, len) => (op === UBLK_IO_OP_READ ? (ctx.buffer(tag).fill(0, 0, len), len) : -EIO) }),
};
export default t;
export async function main(): Promise<Device> {
  const dev = await createDevice({ target: new URL(import.meta.url), queues: 2 });
  const path: string = dev.info.path;
  void path;
  return dev;
}
`,
  );
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', noEmit: true, types: [], skipLibCheck: false } }));
  const tsc = sh(`${join(ROOT, 'node_modules/.bin/tsc')} -p .`, { cwd: app });
  t.equal(tsc.code, 0, `the installed types check a user's target: ${tsc.stdout}${tsc.stderr}`);
});
