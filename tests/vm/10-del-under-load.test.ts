// Issue 8: `ublk del` while fio runs: del exits 0, fio gets errors, nothing
// hangs, nothing is left. The bound is a hang bound for a loaded machine, not
// a speed target; how long del takes is measured by make bench-ublk.
import t from 'tap';
import { addDevice, background, cleanup, fioErrors, sleep, snapshot, ublk, ublkFds, within } from '../lib/ublk.js';

t.teardown(cleanup);

const HANG_MS = 120_000;

t.test('del under fio load, 10 times: exits 0, fio sees errors, nothing is left', async (t) => {
  const before = snapshot();
  for (let i = 0; i < 10; i++) {
    const dev = addDevice('-t', 'null', '-s', '512M', '-q', '2', '-d', '64');
    // fio at the lowest priority: its requests stay in flight all the same,
    // and the CPU goes to the `ublk del` being tested (on 2 emulated CPUs a
    // node start-up starved by two busy fio jobs takes several times as long).
    const fio = background('nice', [
      '-n', '19', 'fio', '--output-format=json', '--name=load', `--filename=${dev.blockDevice}`, '--rw=randrw', '--bs=4k', '--iodepth=32',
      '--ioengine=libaio', '--direct=1', '--time_based', '--runtime=900', '--numjobs=2',
    ]);
    await sleep(1500);
    const start = Date.now();
    const del = background(process.execPath, [new URL('../../../bin/ublk', import.meta.url).pathname, 'del', '-n', String(dev.id)]);
    const done = await within(del.done, HANG_MS);
    t.ok(done !== null, `round ${i}: del returned (${Date.now() - start} ms)`);
    t.equal(done?.code, 0, `round ${i}: del exits 0 ${done?.stderr ?? ''}`);
    const ended = await within(fio.done, HANG_MS);
    if (ended === null) process.kill(fio.pid, 'SIGKILL');
    t.ok(ended !== null && fioErrors(ended).some((e) => e !== 0), `round ${i}: fio ended with errors (${ended ? fioErrors(ended) : 'it hung'})`);
  }
  t.same(snapshot(), before, 'no device, state file or daemon left');
  t.same(ublkFds(), []);
});
