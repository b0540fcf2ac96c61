// Issue 14: a queue that cannot go on (here its target throws) fails the
// request with EIO, stops in bounded time, and says why: in the daemon's log
// and in `ublk list`, until `ublk del` removes the device.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { RUN_DIR, addDevice, cleanup, processAlive, sh, snapshot, ublk, waitFor } from '../lib/ublk.js';

t.teardown(cleanup);

const FIXTURE = fileURLToPath(new URL('../fixtures/failing-mem.js', import.meta.url));
const REASON = /queue 0: target failing-mem: queueIo\(tag \d+, op 1, 4096 bytes at 1048576\) threw: injected failure/;

for (const recoverable of [false, true]) {
  const kernelState = recoverable ? 'QUIESCED' : 'DEAD';
  t.test(`a target that throws${recoverable ? ' (--recoverable)' : ''}: EIO, the daemon ends, list shows ${kernelState} and why`, async (t) => {
    const before = snapshot();
    const dev = addDevice('-t', FIXTURE, '-s', '64M', ...(recoverable ? ['--recoverable'] : []));
    const dd = (args: string) => sh(`dd ${args} bs=4096 count=1 oflag=direct status=none`);
    t.equal(dd(`if=/dev/urandom of=${dev.blockDevice} seek=8`).code, 0, 'a write elsewhere works');
    const bad = sh(`timeout 120 dd if=/dev/zero of=${dev.blockDevice} bs=4096 seek=256 count=1 oflag=direct status=none`);
    t.not(bad.code, 0, 'the write that makes the target throw fails');
    t.match(bad.stderr, /Input\/output error/, 'with EIO');
    t.ok(await waitFor(() => !processAlive(dev.pid), 60_000), 'the daemon ends');

    const list = ublk('list', '-n', String(dev.id));
    t.equal(list.code, 0, list.stderr);
    t.match(list.stdout, new RegExp(`^${dev.id}\\s+-\\s+${kernelState}\\b`, 'm'), `the device is ${kernelState}`);
    t.match(list.stdout, REASON, 'ublk list says why');
    const json = JSON.parse(ublk('list', '-n', String(dev.id), '--json').stdout) as { state: string; failed: { reason: string } | null }[];
    t.equal(json[0].state, kernelState);
    t.match(json[0].failed?.reason ?? '', REASON, '--json has the reason');
    t.match(readFileSync(`${RUN_DIR}/${dev.id}.log`, 'utf8'), REASON, "the daemon's log has it");

    const del = ublk('del', '-n', String(dev.id));
    t.equal(del.code, 0, `ublk del ${del.stderr}`);
    t.same(snapshot(), before, 'nothing is left');
  });
}
