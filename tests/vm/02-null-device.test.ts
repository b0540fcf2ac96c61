// Issue 4 acceptance: a null device, fio on it, list, and a clean del.
import t from 'tap';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { addDevice, blockDeviceSize, cleanup, fio, processAlive, snapshot, ublk, waitFor } from '../lib/ublk.js';

t.teardown(cleanup);

t.test('null device: add, fio, list, del', async (t) => {
  const before = snapshot();
  const dev = addDevice('-t', 'null', '-s', '1G', '-q', '2', '-d', '64');
  t.equal(dev.blockDevice, `/dev/ublkb${dev.id}`);
  t.equal(blockDeviceSize(dev.blockDevice), 1073741824, 'blockdev --getsize64 is 1 GiB');

  const threads = readdirSync(`/proc/${dev.pid}/task`).map((tid) => readFileSync(`/proc/${dev.pid}/task/${tid}/comm`, 'utf8').trim());
  t.ok(threads.includes(`ublk${dev.id}q0`) && threads.includes(`ublk${dev.id}q1`), `top -H names the queue threads ublk${dev.id}q0 and q1 (${[...new Set(threads)].join(' ')})`);

  for (const rw of ['randread', 'randwrite']) {
    const r = fio([
      '--name=r', `--filename=${dev.blockDevice}`, `--rw=${rw}`, '--bs=4k', '--iodepth=32', '--ioengine=libaio',
      '--direct=1', '--runtime=10', '--time_based', '--numjobs=2',
    ]);
    t.equal(r.code, 0, `fio ${rw} exits 0`);
    t.same(r.errors, [0, 0], `fio ${rw}: err=0 in both jobs`);
    t.ok(r.iops > 0, `fio ${rw} did IO (${Math.round(r.iops)} IOPS)`);
  }

  const list = ublk('list', '--json');
  t.equal(list.code, 0, list.stderr);
  const [d] = (JSON.parse(list.stdout) as { id: number; state: string; queues: number; depth: number; pid: number; daemonAlive: boolean }[]).filter((x) => x.id === dev.id);
  t.equal(d.state, 'LIVE');
  t.equal(d.queues, 2);
  t.equal(d.depth, 64);
  t.equal(d.pid, dev.pid);
  t.ok(d.daemonAlive && processAlive(d.pid), 'the daemon is alive');
  t.match(ublk('list').stdout, new RegExp(`^${dev.id}\\s+-\\s+LIVE\\s+2\\s+64\\s+1 GiB\\s+${dev.pid}\\s+null`, 'm'));

  const del = ublk('del', '-n', String(dev.id));
  t.equal(del.code, 0, del.stderr);
  t.notOk(existsSync(`/dev/ublkb${dev.id}`), 'the block device is gone');
  t.notOk(existsSync(`/dev/ublkc${dev.id}`), 'the char device is gone');
  t.ok(await waitFor(() => !processAlive(dev.pid), 5000), 'the daemon exited');
  t.notOk(existsSync(`/run/ublk-ts/${dev.id}.json`), 'the state file is removed');
  t.equal(ublk('list').stdout, '', 'ublk list is empty');
  t.same(snapshot(), before, 'nothing is left behind');
});

t.test('the IO scheduler: none by default (as kernel loop), or the one asked for', async (t) => {
  const schedulers = (id: number): string => readFileSync(`/sys/block/ublkb${id}/queue/scheduler`, 'utf8');
  const current = (id: number): string => /\[([^\]]+)\]/.exec(schedulers(id))?.[1] ?? '?';
  for (const [args, want] of [
    [[], 'none'],
    [['--scheduler', 'mq-deadline'], 'mq-deadline'],
    // One hardware queue: the kernel's own choice is mq-deadline where it is registered.
    [['--scheduler', 'kernel'], 'kernel'],
  ] as const) {
    const dev = addDevice('-t', 'null', '-s', '64M', ...args);
    const expected = want === 'kernel' ? (/\bmq-deadline\b/.test(schedulers(dev.id)) ? 'mq-deadline' : 'none') : want;
    t.equal(current(dev.id), expected, `add ${args.join(' ') || '(no --scheduler)'}: ${expected}`);
    const del = ublk('del', '-n', String(dev.id));
    t.equal(del.code, 0, del.stderr);
  }
});
