// Issue 8: SIGTERM during writes: every write fio saw complete is in the image.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { addDevice, background, cleanup, fio, processAlive, scratchDir, sh, sleep, waitFor } from '../lib/ublk.js';

t.teardown(cleanup);

t.test('SIGTERM to the daemon: in-flight writes complete, then the device goes; fio --verify_only finds every write it saw complete', async (t) => {
  const img = join(scratchDir(), 'sigterm.img');
  sh(`truncate -s 128M ${img}`);
  // fio keeps its verify state (what it saw written) in its working directory.
  const work = mkdtempSync(join(scratchDir(), 'fio-'));
  t.teardown(() => {
    rmSync(img, { force: true });
    rmSync(work, { recursive: true, force: true });
  });
  const dev = addDevice('-t', 'loop', '-f', img, '-q', '2');
  const job = ['--name=w', '--rw=randwrite', '--bs=4k', '--iodepth=16', '--ioengine=libaio', '--direct=1', '--size=96M', '--verify=crc32c', '--randrepeat=1'];
  const writer = background('fio', ['--output-format=json', ...job, `--filename=${dev.blockDevice}`, '--do_verify=0', '--verify_state_save=1'], work);
  await sleep(4000);
  t.ok(processAlive(writer.pid), 'fio is writing');
  process.kill(dev.pid, 'SIGTERM');
  t.ok(await waitFor(() => !processAlive(dev.pid), 15000), 'the daemon exited');
  const w = await writer.done;
  t.not(w.code, 0, 'fio was cut short');
  t.equal(sh(`ls ${work}/*verify.state`).code, 0, 'fio saved what it saw written');
  const loop = sh(`losetup --direct-io=on --find --show ${img}`).stdout.trim();
  t.match(loop, /^\/dev\/loop\d+$/, 'the image on a kernel loop device');
  t.teardown(() => sh(`losetup -d ${loop}`));
  const check = fio([...job, `--filename=${loop}`, '--verify_only', '--verify_state_load=1', '--verify_fatal=0'], work);
  // fio's saved state counts a write as done once issued, so the writes
  // that failed when the device went away (it reports each) are verified
  // too; those may be missing. Every other block must be there.
  const failed = new Set([...(w.stdout + w.stderr).matchAll(/io_u error on file [^\n]*?write offset=(\d+)/g)].map((m) => Number(m[1])));
  const bad = [...check.output.matchAll(/verify[^\n]*? offset[= ](\d+)/g)].map((m) => Number(m[1]));
  t.ok(check.output.includes('"io_bytes"'), 'fio verified the image');
  t.same(bad.filter((o) => !failed.has(o)), [], `every write fio saw complete is in the image (${bad.length} bad blocks, all among the ${failed.size} writes fio saw fail)`);
});
