// Issue 17: block devices whose storage is an NBD server, checked against
// servers nobody here wrote (nbdkit's memory and file plugins, qemu-nbd
// serving qcow2) and with the tools a user has: fio verify, mkfs/e2fsck,
// qemu-img compare.
import t from 'tap';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, addDevice, background, type Background, checkExt4, cleanup, fillExt4, fio, fioErrors, scratchDir, sh, sleep, snapshot, ublk, waitFor, within } from '../lib/ublk.js';

t.teardown(cleanup);

const dir = join(scratchDir(), 'nbd');
const socks = '/run/ublk-nbd-test';
mkdirSync(dir, { recursive: true });
mkdirSync(socks, { recursive: true });
const servers = new Set<Background>();
t.teardown(() => {
  for (const s of servers) sh(`kill -9 ${s.pid} 2>/dev/null`);
  rmSync(dir, { recursive: true, force: true });
  rmSync(socks, { recursive: true, force: true });
});
const p = (name: string) => join(dir, name);
const EIO = 5;

function must(script: string): string {
  const r = sh(script);
  if (r.code !== 0) throw new Error(`${script}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** An NBD server on unix socket `sock`, started in the background; resolves once it listens. */
async function serve(cmd: string, args: string[], sock: string): Promise<Background> {
  rmSync(sock, { force: true });
  const s = background(cmd, args);
  servers.add(s);
  void s.done.then(() => servers.delete(s));
  if (!(await waitFor(() => existsSync(sock), 30_000))) throw new Error(`${cmd} did not start: ${(await within(s.done, 1000))?.stderr ?? ''}`);
  return s;
}

async function kill(s: Background, signal = 'KILL'): Promise<void> {
  sh(`kill -${signal} ${s.pid}`);
  await s.done;
}

const url = (sock: string, exp = '') => `nbd+unix:///${exp}?socket=${sock}`;
const del = (id: number) => ublk('del', '-n', String(id)).code;

/** fio verify crc32c: two jobs of 64 MiB, each on its own part, writes then reads back. */
function verify(dev: string, extra: string[] = []): string[] {
  return [
    '--name=v', `--filename=${dev}`, '--rw=randwrite', '--bsrange=4k-256k', '--iodepth=16', '--ioengine=libaio', '--direct=1',
    '--size=64M', '--numjobs=2', '--offset_increment=128M', '--verify=crc32c', '--verify_fatal=1', ...extra,
  ];
}

t.test('nbdkit memory plugin, 2 queues on 2 connections: fio verify crc32c; list shows the URI, stats each connection', async (t) => {
  const sock = join(socks, 'mem.sock');
  const server = await serve('nbdkit', ['-U', sock, '-f', 'memory', '256M'], sock);
  const dev = addDevice('-t', 'nbd', '--url', url(sock), '-q', '2');
  t.equal(dev.size, 256 * 2 ** 20, 'the device has the export size');
  t.equal(dev.queues, 2);
  t.equal(dev.connections, 'one per queue', 'nbdkit allows multi-conn');
  const v = fio(verify(dev.blockDevice));
  t.same(v.errors, [0, 0], 'fio verify crc32c passes');
  t.match(ublk('list', '-n', String(dev.id)).stdout, new RegExp(`nbd\\s+url=nbd\\+unix:///\\?socket=${sock}`), '`ublk list` shows the URI');
  const stats = JSON.parse(ublk('stats', '-n', String(dev.id), '--json').stdout) as { target: { nbd: { state: string; sentBytes: number; receivedBytes: number }[] } };
  t.equal(stats.target.nbd.length, 2, 'one connection per queue');
  for (const c of stats.target.nbd) t.ok(c.state === 'up' && c.sentBytes > 2 ** 20 && c.receivedBytes > 2 ** 20, `a connection carried data both ways: ${JSON.stringify(c)}`);
  t.match(ublk('stats', '-n', String(dev.id)).stdout, /nbd\s+q0\s+q1/, 'the text form has a connection table');
  t.equal(del(dev.id), 0, 'ublk del');
  await kill(server, 'TERM');
});

t.test('qemu-nbd serving qcow2: one connection (no multi-conn, said), the image holds exactly what was written; ext4 on it', async (t) => {
  const sock = join(socks, 'qemu.sock');
  must(`cd ${dir} && rm -f img.qcow2 twin.raw && qemu-img create -q -f qcow2 img.qcow2 256M && qemu-img convert -O raw img.qcow2 twin.raw`);
  let server = await serve('qemu-nbd', ['-t', '-x', 'exp', '-f', 'qcow2', '-k', sock, p('img.qcow2')], sock);
  const add = ublk('add', '-t', 'nbd', '--url', url(sock, 'exp'), '-q', '2', '--json');
  t.equal(add.code, 0, `ublk add ${add.stderr}`);
  t.match(add.stderr, /warning: 1 queue, not 2: the NBD server does not allow more than one connection/, 'add says why one queue');
  const dev = JSON.parse(add.stdout) as { id: number; blockDevice: string; queues: number };
  t.equal(dev.queues, 1);
  const twin = addDevice('-t', 'loop', '-f', p('twin.raw'));
  // The same random writes, the same bytes, on both (refill_buffers with a fixed seed).
  for (const d of [dev.blockDevice, twin.blockDevice]) {
    const r = fio(['--name=same', `--filename=${d}`, '--rw=randwrite', '--bsrange=4k-256k', '--ioengine=libaio', '--iodepth=16', '--direct=1', '--size=256M', '--io_size=64M', '--randseed=4242', '--refill_buffers=1']);
    t.same(r.errors, [0], `fio writes ${d}`);
  }
  t.equal(del(dev.id), 0, 'ublk del (nbd)');
  t.equal(del(twin.id), 0, 'ublk del (loop)');
  await kill(server, 'TERM');
  const cmp = sh(`qemu-img compare -f qcow2 -F raw ${p('img.qcow2')} ${p('twin.raw')}`);
  t.equal(cmp.code, 0, `qemu-img compare: ${cmp.stdout.trim()}${cmp.stderr.trim()}`);

  server = await serve('qemu-nbd', ['-t', '-x', 'exp', '-f', 'qcow2', '-k', sock, p('img.qcow2')], sock);
  const fs = addDevice('-t', 'nbd', '--url', url(sock, 'exp'));
  const mnt = '/run/ublk-nbd-mnt';
  mkdirSync(mnt, { recursive: true });
  t.teardown(() => sh(`umount ${mnt} 2>/dev/null`));
  checkExt4(t, fs.blockDevice, mnt, fillExt4(t, fs.blockDevice, mnt));
  t.equal(del(fs.id), 0, 'ublk del');
  await kill(server, 'TERM');
  t.equal(sh(`qemu-img check ${p('img.qcow2')}`).code, 0, 'qemu-img check is clean');
});

t.test('the server killed under fio: fio sees errors at once, ublk del works, nothing is left', async (t) => {
  const sock = join(socks, 'die.sock');
  const server = await serve('nbdkit', ['-U', sock, '-f', 'memory', '128M'], sock);
  const before = snapshot();
  const dev = addDevice('-t', 'nbd', '--url', url(sock), '-q', '2', '--timeout', '10');
  const load = background('fio', [
    '--output-format=json', '--name=load', `--filename=${dev.blockDevice}`, '--rw=randrw', '--bs=4k', '--ioengine=libaio',
    '--iodepth=16', '--direct=1', '--numjobs=2', '--time_based', '--runtime=300',
  ]);
  await sleep(3000);
  await kill(server);
  const killed = Date.now();
  const r = await within(load.done, 60_000);
  t.ok(r !== null, `fio ended ${Date.now() - killed} ms after the server died`);
  t.ok(r !== null && Date.now() - killed < 10_000, 'within the 10 s timeout (a closed connection fails IO at once)');
  t.ok(r !== null && fioErrors(r).includes(EIO), `fio saw EIO (${r === null ? '' : fioErrors(r).join(', ')})`);
  sh(`kill -9 ${load.pid} 2>/dev/null`);
  const stats = JSON.parse(ublk('stats', '-n', String(dev.id), '--json').stdout) as { target: { nbd: { state: string }[] } };
  t.same(stats.target.nbd.map((c) => c.state), ['failed', 'failed'], '`ublk stats` shows the connections failed');
  t.equal(del(dev.id), 0, 'ublk del');
  t.same(snapshot(), before, 'no device, state file or daemon left');
});

t.test('--reconnect: the server killed and restarted under fio verify; fio finishes without an error', async (t) => {
  const sock = join(socks, 're.sock');
  must(`rm -f ${p('re.raw')} && truncate -s 256M ${p('re.raw')}`);
  const start = () => serve('nbdkit', ['-U', sock, '-f', 'file', p('re.raw')], sock);
  let server = await start();
  const dev = addDevice('-t', 'nbd', '--url', url(sock), '-q', '2', '--reconnect');
  const run = background('fio', ['--output-format=json', '--verify_state_save=0', ...verify(dev.blockDevice, ['--size=96M'])]);
  await sleep(4000);
  await kill(server);
  await sleep(3000);
  server = await start();
  const r = await within(run.done, 600_000);
  t.ok(r !== null, 'fio finished');
  t.same(r === null ? null : fioErrors(r), [0, 0], 'fio verify crc32c passes across the restart');
  const stats = JSON.parse(ublk('stats', '-n', String(dev.id), '--json').stdout) as { target: { nbd: { state: string; reconnects: number }[] } };
  t.same(stats.target.nbd.map((c) => c.state), ['up', 'up']);
  t.ok(stats.target.nbd.every((c) => c.reconnects >= 1), `each connection reconnected: ${JSON.stringify(stats.target.nbd)}`);
  t.equal(del(dev.id), 0, 'ublk del');
  await kill(server, 'TERM');
});

t.test('bad inputs: one line, exit 1, nothing left', async (t) => {
  const sock = join(socks, 'bad.sock');
  must(`truncate -s 16M ${p('bad.raw')}`);
  const server = await serve('qemu-nbd', ['-t', '-x', 'exp', '-f', 'raw', '-k', sock, p('bad.raw')], sock);
  const greet = join(socks, 'greet.sock');
  const greeter = await serve(process.execPath, [join(ROOT, 'dist/tests/lib/bad-nbd-server.js'), 'greet', greet], greet);
  const before = snapshot();
  for (const [args, why] of [
    [['--url', 'nbd://'], /bad NBD URI 'nbd:\/\/': no host/],
    [['--url', 'nbd://127.0.0.1:1/x'], /cannot connect to 127\.0\.0\.1:1: Connection refused/],
    [['--url', url(sock, 'nope')], /the server has no export 'nope'/],
    [['--url', url(greet, 'x')], /the server closed the connection/],
    [[], /needs a server \(--url/],
  ] as const) {
    const r = ublk('add', '-t', 'nbd', ...args);
    t.equal(r.code, 1, `ublk add ${args.join(' ')}: exit 1`);
    t.match(r.stderr, why, r.stderr.trim());
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  }
  t.same(snapshot(), before, 'no device, state file or daemon left');
  await kill(server, 'TERM');
  await kill(greeter);
});
