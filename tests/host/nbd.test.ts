// The nbd target on the host (no ublk_drv): its queues served by the real
// dispatcher against a fake kernel (tests/lib/target-client.ts), talking to
// NBD servers nobody here wrote: nbdkit (memory and file plugins) and
// qemu-nbd serving a qcow2 image, over unix sockets and loopback TCP.
import t from 'tap';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import nbd from '../../target/nbd/index.js';
import { parseNbdUri, formatNbdUri } from '../../target/nbd/uri.js';
import { TargetError } from '../../target/target.js';
import { TargetClient } from '../lib/target-client.js';
import { readAll, result, workload } from '../lib/workload.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const EIO = -5;
const dir = mkdtempSync('/var/tmp/ublk-nbd-');
const servers = new Set<ChildProcess>();
t.teardown(async () => {
  await TargetClient.closeAll();
  for (const s of servers) s.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});
const p = (name: string) => join(dir, name);

/** Starts an NBD server listening on unix socket `sock` (made by it); resolves once the socket exists. */
async function serve(cmd: string, args: string[], sock: string): Promise<ChildProcess> {
  rmSync(sock, { force: true });
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  servers.add(proc);
  proc.on('exit', () => servers.delete(proc));
  for (let i = 0; !existsSync(sock); i++) {
    if (i > 500 || proc.exitCode !== null) throw new Error(`${cmd} did not start`);
    await sleep(10);
  }
  return proc;
}

const nbdkit = (sock: string, ...plugin: string[]) => serve('nbdkit', ['-U', sock, '-f', '--exit-with-parent', ...plugin], sock);

async function stop(proc: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const gone = new Promise((r) => proc.once('exit', r));
  proc.kill(signal);
  await gone;
}

const unixUrl = (sock: string, exp = '') => `nbd+unix:///${exp}?socket=${sock}`;

t.test('NBD URIs', async (t) => {
  t.same(parseNbdUri('nbd://localhost/disk'), { to: { host: 'localhost', port: 10809 }, exportName: 'disk' });
  t.same(parseNbdUri('nbd://127.0.0.1:10900/a%20b'), { to: { host: '127.0.0.1', port: 10900 }, exportName: 'a b' });
  t.same(parseNbdUri('nbd://[::1]:10900/'), { to: { host: '::1', port: 10900 }, exportName: '' });
  t.same(parseNbdUri('nbd+unix:///exp?socket=/run/x.sock'), { to: { path: '/run/x.sock' }, exportName: 'exp' });
  t.equal(formatNbdUri(parseNbdUri('nbd://[::1]:10809/a%20b')), 'nbd://[::1]/a%20b');
  for (const [uri, why] of [
    ['localhost/disk', /not a URI/],
    ['http://localhost/disk', /scheme is http/],
    ['nbd:///disk', /no host/],
    ['nbds://localhost/disk', /TLS/],
    ['nbd+unix:///disk', /no socket=PATH/],
    ['nbd+unix://host/disk?socket=/x', /no host/],
    ['nbd://localhost/disk?tls=1', /unknown query parameter 'tls'/],
    ['nbd://localhost/%zz', /%-escape/],
  ] as const) {
    t.throws(() => parseNbdUri(uri), { name: 'TargetError', message: why }, uri);
  }
});

t.test('nbdkit memory plugin, 2 queues (multi-conn): data, flush, FUA, write zeroes, trim, stats', async (t) => {
  const sock = p('mem.sock');
  await nbdkit(sock, 'memory', '32M');
  const c = await TargetClient.open(nbd, { url: unixUrl(sock) }, { queues: 2, depth: 16, maxIoSize: MiB });
  t.equal(c.queues, 2, 'one connection per queue');
  t.equal(c.device.size, 32 * MiB);
  t.match(c.device.info, { url: unixUrl(sock), connections: 'one per queue' });
  t.ok(c.device.volatileCache && c.device.fua, 'the server flushes and takes FUA');
  const model = Buffer.alloc(32 * MiB);
  t.equal(await workload(c, model, 480), 0, 'every read matched what was written');
  await c.flush(0);
  await c.flush(1);
  await c.writeZeroes(MiB, 2 * MiB, { qId: 1 });
  model.fill(0, MiB, 3 * MiB);
  await c.discard(8 * MiB, MiB); // nbdkit's memory plugin reads trimmed blocks as zeros
  model.fill(0, 8 * MiB, 9 * MiB);
  t.ok((await readAll(c, model.length)).equals(model), 'the whole device reads back as written');
  const s = c.device.stats?.(c.statsBuffers()) as { nbd: { state: string; sentBytes: number; receivedBytes: number; reconnects: number }[] };
  t.equal(s.nbd.length, 2);
  for (const q of s.nbd) {
    t.equal(q.state, 'up');
    t.equal(q.reconnects, 0);
    t.ok(q.sentBytes > 4 * MiB && q.receivedBytes > 4 * MiB, `each connection carried data (sent ${q.sentBytes}, received ${q.receivedBytes})`);
  }
  await c.close();
});

t.test('qemu-nbd serving qcow2 (no multi-conn): one queue, holes read as zeros, the image holds what was written', async (t) => {
  const sock = p('qemu.sock');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', p('a.qcow2'), '24M']);
  const server = await serve('qemu-nbd', ['-k', sock, '-x', 'exp', '-f', 'qcow2', '-t', p('a.qcow2')], sock);
  const c = await TargetClient.open(nbd, { url: unixUrl(sock, 'exp') }, { queues: 2, depth: 16, maxIoSize: MiB });
  t.equal(c.queues, 1, 'one queue: the server takes one connection');
  t.match(c.device.queueLimit, { max: 1, reason: /does not allow more than one connection/ });
  const model = Buffer.alloc(24 * MiB);
  t.ok((await c.read(20 * MiB, MiB)).equals(Buffer.alloc(MiB)), 'an unallocated range (a hole chunk) reads as zeros');
  t.equal(await workload(c, model, 240), 0, 'every read matched what was written');
  await c.writeZeroes(2 * MiB, MiB, { noUnmap: true });
  model.fill(0, 2 * MiB, 3 * MiB);
  await c.flush();
  t.ok((await readAll(c, model.length)).equals(model), 'the whole device reads back as written');
  await c.close();
  await stop(server);
  writeFileSync(p('model.raw'), model);
  t.equal(execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', p('model.raw'), p('a.qcow2')], { encoding: 'utf8' }).trim(), 'Images are identical.');
});

t.test('over TCP on loopback, the host name resolved: nbdkit file plugin', async (t) => {
  const port = await freePort();
  writeFileSync(p('tcp.raw'), Buffer.alloc(8 * MiB));
  const server = spawn('nbdkit', ['-i', '127.0.0.1', '-p', String(port), '-f', '--exit-with-parent', 'file', p('tcp.raw')], { stdio: ['ignore', 'ignore', 'inherit'] });
  servers.add(server);
  for (let i = 0; !(await listening(port)); i++) {
    if (i > 300) throw new Error('nbdkit did not listen');
    await sleep(10);
  }
  const c = await TargetClient.open(nbd, { url: `nbd://localhost:${port}/` }, { queues: 2, depth: 8 });
  t.equal(c.queues, 2);
  const model = Buffer.alloc(8 * MiB);
  t.equal(await workload(c, model, 96), 0, 'every read matched what was written');
  await c.flush();
  await c.close();
  await stop(server);
  t.ok(readFileSync(p('tcp.raw')).equals(model), 'the file holds what was written');
});

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.on('connect', () => (s.destroy(), resolve(true)));
    s.on('error', () => resolve(false));
  });
}

t.test('a read-only export makes a read-only device, and says so', async (t) => {
  const sock = p('ro.sock');
  writeFileSync(p('ro.raw'), Buffer.alloc(4 * MiB, 7));
  const server = await serve('qemu-nbd', ['-k', sock, '-x', 'ro', '-f', 'raw', '-r', '-t', p('ro.raw')], sock);
  const c = await TargetClient.open(nbd, { url: unixUrl(sock, 'ro') });
  t.equal(c.device.readOnly, true);
  t.match(c.device.warnings, [/read-only/]);
  t.ok((await c.read(0, 4 * KiB)).equals(Buffer.alloc(4 * KiB, 7)));
  await c.close();
  await stop(server);
});

/** File descriptors this process has open: a failed open must leave none behind. */
const openFds = () => readdirSync('/proc/self/fd').length;

/** tests/lib/bad-nbd-server.ts in `mode`, in its own process; resolves with its port. */
async function badServer(mode: string): Promise<number> {
  const proc = spawn(process.execPath, [fileURLToPath(new URL('../lib/bad-nbd-server.js', import.meta.url)), mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  servers.add(proc);
  const [line] = (await once(proc.stdout!, 'data')) as [Buffer];
  return Number(line.toString().trim());
}

/** A free TCP port on loopback (for a server that takes one on its command line). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

t.test('bad servers and URIs: one line, nothing left open', async (t) => {
  const sock = p('bad.sock');
  const server = await serve('qemu-nbd', ['-k', sock, '-x', 'exp', '-f', 'raw', '-t', p('ro.raw')], sock);
  const [closer, junk, greeter] = await Promise.all(['close', 'junk', 'greet'].map(badServer));
  const before = openFds();
  for (const [url, why] of [
    ['nbd://127.0.0.1:1/x', /cannot connect to 127\.0\.0\.1:1: Connection refused/],
    [unixUrl(p('nobody.sock')), /cannot connect to .*nobody\.sock: No such file or directory/],
    [unixUrl(sock, 'nope'), /the server has no export 'nope'/],
    [`nbd://127.0.0.1:${closer}/x`, /closed the connection/],
    [`nbd://127.0.0.1:${junk}/x`, /not an NBD server/],
    [`nbd://127.0.0.1:${greeter}/x`, /closed the connection/],
    ['nbd://no-such-host.invalid/x', /cannot resolve host no-such-host\.invalid/],
    ['ftp://x/y', /bad NBD URI/],
  ] as const) {
    await t.rejects(async () => nbd.open({ url }), { name: TargetError.name, message: why }, url);
  }
  await t.rejects(async () => nbd.open({ url: unixUrl(sock, 'exp'), timeout: -1 }), { message: /timeout must be whole seconds/ });
  t.equal(openFds(), before, 'no file descriptor left open');
  await stop(server);
});

t.test('the server dies under IO: what it held fails with EIO at once, and so does later IO', async (t) => {
  const sock = p('die.sock');
  const server = await nbdkit(sock, 'memory', '16M');
  const c = await TargetClient.open(nbd, { url: unixUrl(sock) }, { queues: 2, depth: 16 });
  await c.write(0, Buffer.alloc(MiB, 1));
  const started = Date.now();
  const inFlight = Array.from({ length: 32 }, (_, i) => result(c.read((i % 16) * MiB, 512 * KiB, i % 2)));
  await stop(server, 'SIGKILL');
  const results = await Promise.all(inFlight);
  t.ok(results.every((r) => r === 0 || r === EIO), `reads ended with data or EIO (${[...new Set(results)].join(', ')})`);
  t.equal(await result(c.read(0, 4 * KiB)), EIO, 'a read after the server died fails with EIO');
  t.equal(await result(c.write(0, Buffer.alloc(4 * KiB), { qId: 1 })), EIO, 'a write too, on the other queue');
  t.ok(Date.now() - started < 5000, 'well within the timeout');
  t.match(c.device.stats?.(c.statsBuffers()), { nbd: [{ state: 'failed' }, { state: 'failed' }] });
  await c.close();
});

t.test('a server that stops answering: IO fails with EIO after --timeout', async (t) => {
  const sock = p('hang.sock');
  const server = await nbdkit(sock, 'memory', '16M');
  const c = await TargetClient.open(nbd, { url: unixUrl(sock), timeout: 2 });
  await c.write(0, Buffer.alloc(MiB, 1));
  server.kill('SIGSTOP');
  // kill() returns before the signal is taken: wait until the server is stopped (state T).
  while (!/^\d+ \(.*\) T /.test(readFileSync(`/proc/${server.pid}/stat`, 'utf8'))) await sleep(5);
  const started = Date.now();
  t.equal(await result(c.read(0, 4 * KiB)), EIO);
  const took = Date.now() - started;
  t.ok(took >= 1500 && took < 6000, `failed after ${took} ms (timeout 2 s, checked each second)`);
  server.kill('SIGCONT');
  await c.close();
  await stop(server);
});

t.test('--reconnect: IO waits while the server is away and completes once it is back', async (t) => {
  const sock = p('re.sock');
  const image = p('re.raw');
  writeFileSync(image, Buffer.alloc(16 * MiB));
  let server = await nbdkit(sock, 'file', image);
  const c = await TargetClient.open(nbd, { url: unixUrl(sock), reconnect: true }, { queues: 2, depth: 16 });
  const model = Buffer.alloc(16 * MiB);
  t.equal(await workload(c, model, 96), 0);
  await stop(server, 'SIGKILL');
  // Requests in flight while there is no server: held, not failed.
  const a = randomBytes(MiB);
  a.copy(model, 3 * MiB);
  const held = [c.write(3 * MiB, a, { qId: 0 }), c.read(5 * MiB, MiB, 1)];
  await sleep(1500);
  let settled = false;
  void Promise.allSettled(held).then(() => (settled = true));
  await sleep(10);
  t.equal(settled, false, 'held while the server is away');
  server = await nbdkit(sock, 'file', image);
  const [, r] = (await Promise.all(held)) as [void, Buffer];
  t.ok(r.equals(model.subarray(5 * MiB, 6 * MiB)), 'the held read got its data');
  t.equal(await workload(c, model, 96), 0, 'IO goes on after the reconnect');
  t.ok((await readAll(c, model.length)).equals(model), 'the device reads back as written');
  const s = c.device.stats?.(c.statsBuffers()) as { nbd: { state: string; reconnects: number }[] };
  t.same(
    s.nbd.map((q) => q.state),
    ['up', 'up'],
  );
  t.ok(s.nbd.every((q) => q.reconnects === 1), 'each connection reconnected once');
  await c.close();
  await stop(server);
});

t.test('--reconnect: a read cut in the middle of its reply is read again whole, even when the new connection replies the other way', async (t) => {
  // The server cuts the first large read after its chunk header and half its data, then agrees on
  // simple replies where the first connection had structured ones.
  const port = await badServer('cut');
  const c = await TargetClient.open(nbd, { url: `nbd://127.0.0.1:${port}/`, reconnect: true });
  const data = randomBytes(64 * KiB);
  await c.write(MiB, data);
  const r = await c.read(MiB, 64 * KiB);
  t.ok(r.equals(data), 'the read got its data, none of it twice');
  t.ok((await c.read(0, MiB)).equals(Buffer.alloc(MiB)), 'and reads go on over simple replies');
  const s = c.device.stats?.(c.statsBuffers()) as { nbd: { state: string; reconnects: number }[] };
  t.match(s.nbd, [{ state: 'up', reconnects: 1 }], 'one reconnect');
  await c.close();
});

t.test('--reconnect: a connection lost again soon after a reconnect reconnects again, and the read completes', async (t) => {
  // The server drops the first two connections that get a large read. The
  // second loss comes before the first connection's timeout tick has fired:
  // that tick must not hold the next reconnect back for ever.
  const port = await badServer('drop2');
  const c = await TargetClient.open(nbd, { url: `nbd://127.0.0.1:${port}/`, reconnect: true });
  const data = randomBytes(64 * KiB);
  await c.write(2 * MiB, data);
  const r = await Promise.race([c.read(2 * MiB, 64 * KiB), sleep(8000).then(() => null)]);
  t.ok(r !== null && r.equals(data), 'the read got its data within 8 s');
  const s = c.device.stats?.(c.statsBuffers()) as { nbd: { state: string; reconnects: number }[] };
  t.match(s.nbd, [{ state: 'up', reconnects: 2 }], 'two reconnects');
  await c.close();
});

t.test('read chunks out of order (which the spec allows): the read gets its data', async (t) => {
  const port = await badServer('reorder');
  const c = await TargetClient.open(nbd, { url: `nbd://127.0.0.1:${port}/` });
  const data = randomBytes(64 * KiB);
  await c.write(MiB, data);
  t.ok((await c.read(MiB, 64 * KiB)).equals(data), 'quarters 3, 1, 4, 2 make the whole read');
  t.match(c.device.stats?.(c.statsBuffers()), { nbd: [{ state: 'up' }] });
  await c.close();
});

t.test('read chunks that overlap: the read fails, never completes with what was in its buffer', async (t) => {
  const port = await badServer('overlap');
  const c = await TargetClient.open(nbd, { url: `nbd://127.0.0.1:${port}/` });
  await c.write(MiB, Buffer.alloc(64 * KiB, 0x11));
  await c.read(0, 4 * KiB); // a small read is answered in one chunk
  t.equal(await result(c.read(MiB, 64 * KiB)), EIO, 'EIO: the chunks covered half the read twice and the rest never');
  t.match(c.device.stats?.(c.statsBuffers()), { nbd: [{ state: 'failed' }] }, 'the connection to a server that breaks the protocol is dropped');
  await c.close();
});

t.test('a reply chunk of a type never asked for (block status to a write): the write fails, never reads as done', async (t) => {
  const port = await badServer('unasked');
  const c = await TargetClient.open(nbd, { url: `nbd://127.0.0.1:${port}/` });
  t.equal(await result(c.write(0, Buffer.alloc(4 * KiB, 0x22))), EIO);
  t.match(c.device.stats?.(c.statsBuffers()), { nbd: [{ state: 'failed' }] }, 'the connection is dropped, as the spec requires');
  await c.close();
});

t.test('a stray reply naming a tag that now carries another request: taken for no request, the read fails', async (t) => {
  // The server answers the write, then answers it again just before the
  // read that reuses its tag: the stray reply (no error, no data) must not
  // be read as the read's header, with the read's real reply as its data.
  const port = await badServer('dup');
  const c = await TargetClient.open(nbd, { url: `nbd://127.0.0.1:${port}/` }, { depth: 1 });
  await c.write(0, Buffer.alloc(4 * KiB, 0x33));
  t.equal(await result(c.read(0, 4 * KiB)), EIO);
  t.match(c.device.stats?.(c.statsBuffers()), { nbd: [{ state: 'failed' }] }, 'the connection is dropped');
  await c.close();
});
