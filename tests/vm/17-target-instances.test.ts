// Issue 14: each device owns its target's state. Two loop devices and a mem
// device served by this one process take fio verify at the same time;
// stopping one leaves the others serving; a create that fails closes only
// its own backing file; each image holds its own data.
import t from 'tap';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createDevice, type Device } from '../../index.js';
import { background, fioErrors, scratchDir, sh, snapshot } from '../lib/ublk.js';

/** fio verify job over the first 48 MiB of `path`; seeds differ, so devices that mixed up their data would fail. */
function verifyJob(path: string, seed: number, extra: string[] = []): string[] {
  return [
    '--output-format=json', '--verify_state_save=0', `--name=d${seed}`, `--filename=${path}`, '--rw=randwrite', '--bs=4k-64k',
    '--iodepth=16', '--ioengine=libaio', '--direct=1', '--size=48M', '--verify=crc32c', '--verify_fatal=1', `--randseed=${seed}`, ...extra,
  ];
}

/** Runs fio's verify pass alone over what verifyJob(seed) wrote. */
async function verifyOnly(path: string, seed: number): Promise<number[]> {
  return fioErrors(await background('fio', verifyJob(path, seed, ['--verify_only'])).done);
}

t.test('two loop devices and a mem device in one process: verify on all at once, stop in any order', async (t) => {
  const before = snapshot();
  const imgs = [join(scratchDir(), 'inst-a.img'), join(scratchDir(), 'inst-b.img'), join(scratchDir(), 'inst-c.img')];
  sh(`truncate -s 64M ${imgs.join(' ')}`);
  t.teardown(() => imgs.forEach((f) => rmSync(f, { force: true })));

  const a = await createDevice({ target: 'loop', targetOptions: { file: imgs[0] }, queues: 2, depth: 32 });
  t.teardown(() => a.stop());
  // A second create that fails after its target opened (the id is taken) must close only its own file.
  const dup = await createDevice({ target: 'loop', targetOptions: { file: imgs[2] }, id: a.info.id }).then(
    () => null,
    (e: Error) => e.message,
  );
  t.match(dup, /exists/, `a create with a taken id fails: ${dup}`);
  const b = await createDevice({ target: 'loop', targetOptions: { file: imgs[1], engine: 'uring' }, queues: 2, depth: 32 });
  t.teardown(() => b.stop());
  const m = await createDevice({ target: 'mem', targetOptions: { size: '64M' }, depth: 32 });
  t.teardown(() => m.stop());
  const c = await createDevice({ target: 'loop', targetOptions: { file: imgs[2] }, depth: 32 });
  t.teardown(() => c.stop());
  t.pass('the file of the failed create is free again: a device serves it');

  const devices: [string, Device, number][] = [
    ['loop a', a, 1],
    ['loop b (uring)', b, 2],
    ['mem', m, 3],
    ['loop c', c, 4],
  ];
  const runs = devices.map(([, d, seed]) => background('fio', verifyJob(d.info.path, seed)).done);
  const results = await Promise.all(runs);
  devices.forEach(([name], i) => t.same(fioErrors(results[i]), [0], `${name}: fio verify at the same time as the others`));

  await a.stop();
  t.same(await verifyOnly(b.info.path, 2), [0], 'loop a stopped: loop b still reads its own data');
  t.same(await verifyOnly(m.info.path, 3), [0], 'and mem its own');
  await m.stop();
  t.same(await verifyOnly(c.info.path, 4), [0], 'mem stopped: loop c still reads its own data');
  await c.stop();
  t.same(await verifyOnly(b.info.path, 2), [0], 'loop c stopped: loop b still serves');
  await b.stop();

  for (const [i, seed] of [[0, 1], [1, 2], [2, 4]]) {
    t.same(await verifyOnly(imgs[i], seed), [0], `${imgs[i]} holds its own device's data`);
  }
  t.same(snapshot(), before, 'nothing is left');
});
