// Issue 16: the loop target refuses disk images it would serve as their
// container's bytes; images made by qemu-img (qemu-utils), not by us.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import loop from '../../target/loop/index.js';
import { TargetError, type TargetDevice } from '../../target/target.js';
import { holdWithQemuIo } from '../lib/qemu-holder.js';

// /var/tmp, not a tmpfs: the probe's read must work with O_DIRECT.
const dir = mkdtempSync('/var/tmp/ublk-image-format-');
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function qemuImg(...args: string[]): void {
  execFileSync('qemu-img', args, { stdio: ['ignore', 'ignore', 'inherit'] });
}

function openError(file: string, raw = false): string {
  let dev: TargetDevice | undefined;
  try {
    dev = loop.open({ file, raw }) as TargetDevice; // loop opens synchronously
  } catch (e) {
    if (!(e instanceof TargetError)) throw e;
    return e.message;
  }
  dev.close?.();
  return '';
}

const CONVERT = 'convert it with qemu-img convert -O raw';
const formats: [string, string, string[], string][] = [
  ['qcow2', 'qcow2', [], 'use -t qcow2'],
  ['qcow2 version 2', 'qcow2', ['-o', 'compat=0.10'], 'use -t qcow2'],
  ['qcow', 'qcow', [], CONVERT],
  ['qed', 'QED', [], CONVERT],
  ['vmdk', 'VMDK', [], CONVERT],
  ['vhdx', 'VHDX', [], CONVERT],
  ['vdi', 'VDI', [], CONVERT],
  ['vpc', 'VHD', ['-o', 'subformat=dynamic'], CONVERT],
];

for (const [fmt, name, opts, hint] of formats) {
  t.test(`a ${fmt} image is refused with a hint, and served raw with --raw`, async (t) => {
    const file = join(dir, `${fmt.replace(/ /g, '-')}.img`);
    qemuImg('create', '-q', '-f', fmt.split(' ')[0], ...opts, file, '64M');
    t.equal(
      openError(file),
      `${file} is a ${name} image: ${hint} (or --raw to serve its bytes as they are)`,
    );
    // raw: what is left is whatever the raw file's own size allows.
    t.notMatch(openError(file, true), / image: /, '--raw skips the probe');
  });
}

t.test("a VMDK descriptor is refused; the flat extent it names is raw and is served", async (t) => {
  const file = join(dir, 'flat.vmdk');
  qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', file, '64M');
  t.match(openError(file), /flat\.vmdk is a VMDK descriptor image: serve the extent file it names \(or --raw/);
  t.equal(openError(join(dir, 'flat-flat.vmdk')), '');
});

t.test('a raw image, and a file that only mentions a magic past the probe, are served', async (t) => {
  const file = join(dir, 'disk.raw');
  qemuImg('create', '-q', '-f', 'raw', file, '64M');
  t.equal(openError(file), '');
  const late = join(dir, 'late.img');
  const bytes = Buffer.alloc(1 << 20);
  bytes.write('QFI\xfb', 4096, 'latin1');
  writeFileSync(late, bytes);
  t.equal(openError(late), '');
});

t.test("a raw file qemu writes is refused, and qemu does not write a file the loop target serves (qemu's image lock)", async (t) => {
  const img = join(dir, 'shared.img');
  writeFileSync(img, Buffer.alloc(1 << 20));
  const dev = loop.open({ file: img }) as TargetDevice;
  let said = '';
  try {
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write 0 4k', img], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    said = String((e as { stderr?: Buffer }).stderr);
  }
  dev.close?.();
  t.match(said, /Failed to get .*lock/, 'qemu-io cannot write it while the loop target serves it');

  const holder = await holdWithQemuIo(img, 'raw');
  try {
    t.match(openError(img), /shared\.img is in use by another program that holds its qemu image lock/);
  } finally {
    holder.kill('SIGKILL');
  }
});
