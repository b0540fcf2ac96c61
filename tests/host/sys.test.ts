// The native layer against the real kernel: errors, files, memory, eventfd.
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SysError } from '../../sys/error.js';
import { EventFd } from '../../sys/eventfd.js';
import * as file from '../../sys/file.js';
import { NativeMemory } from '../../sys/memory.js';
import { connectStream, recvAll } from '../../sys/socket.js';
import { setTimeout as sleep } from 'node:timers/promises';

const dir = mkdtempSync(join(tmpdir(), 'ublk-sys-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('a failed open is a SysError shaped like Node SystemError', async (t) => {
  const path = join(dir, 'missing');
  const err = t.throws(() => file.open(path, file.O_RDONLY)) as SysError;
  t.ok(err instanceof SysError);
  t.equal(err.code, 'ENOENT');
  t.equal(err.errno, -2);
  t.equal(err.syscall, 'open');
  t.equal(err.path, path);
  t.equal(err.message, `open '${path}': No such file or directory`);
});

t.test('pwrite/pread/fsync/ftruncate/fstat on a file', async (t) => {
  const path = join(dir, 'data');
  const fd = file.open(path, file.O_RDWR | file.O_CREAT);
  t.teardown(() => file.close(fd));
  const out = Buffer.from('hello, block device');
  t.equal(file.pwrite(fd, out, out.length, 4096), out.length);
  file.fdatasync(fd);
  file.fsync(fd);
  const back = Buffer.alloc(out.length);
  t.equal(file.pread(fd, back, back.length, 4096), out.length);
  t.same(back, out);
  t.equal(file.pread(fd, back, back.length, 1 << 20), 0, 'reading past the end reads nothing');
  t.equal(file.fstat(fd).size, 4096 + out.length);
  file.ftruncate(fd, 8192);
  const st = file.fstat(fd);
  t.equal(st.size, 8192);
  t.ok(st.isFile);
  t.notOk(st.isBlockDevice);
});

t.test('fallocate punches a hole that reads back as zeros', async (t) => {
  const path = join(dir, 'holes');
  writeFileSync(path, Buffer.alloc(1 << 20, 0xab));
  const fd = file.open(path, file.O_RDWR);
  t.teardown(() => file.close(fd));
  file.fallocate(fd, file.FALLOC_FL_PUNCH_HOLE | file.FALLOC_FL_KEEP_SIZE, 65536, 65536);
  const back = Buffer.alloc(65536);
  file.pread(fd, back, back.length, 65536);
  t.ok(back.every((b) => b === 0));
  t.equal(file.fstat(fd).size, 1 << 20, 'KEEP_SIZE keeps the size');
});

t.test('ioctl on something that is not a block device fails with ENOTTY', async (t) => {
  const fd = file.open('/dev/null', file.O_RDONLY);
  t.teardown(() => file.close(fd));
  const err = t.throws(() => file.blockDeviceSize(fd, '/dev/null')) as SysError;
  t.equal(err.code, 'ENOTTY');
  t.equal(err.syscall, 'ioctl');
});

t.test('aligned native memory is aligned, zeroed and viewable', async (t) => {
  const mem = NativeMemory.aligned(3 * 4096, 4096);
  t.teardown(() => mem.free());
  t.equal(mem.addr % 4096, 0);
  const u8 = new Uint8Array(mem.buffer);
  t.equal(u8.length, 3 * 4096);
  t.ok(u8.every((b) => b === 0));
  u8[100] = 7;
  t.equal(new Uint8Array(mem.buffer)[100], 7, 'views alias the same memory');
});

t.test('anonymous native memory is page-aligned, zero and writable', async (t) => {
  const mem = NativeMemory.anonymous(16 * 4096);
  t.teardown(() => mem.free());
  t.equal(mem.addr % 4096, 0);
  const u8 = new Uint8Array(mem.buffer, 5 * 4096, 4096);
  t.ok(u8.every((b) => b === 0));
  u8[1] = 9;
  t.equal(new Uint8Array(mem.buffer)[5 * 4096 + 1], 9);
});

t.test('eventfd counts signals and drains to zero', async (t) => {
  const efd = new EventFd();
  t.teardown(() => efd.close());
  t.equal(efd.drain(), 0, 'a fresh non-blocking eventfd reads as 0');
  efd.signal();
  efd.signal(2);
  t.equal(efd.drain(), 3);
  t.equal(efd.drain(), 0);
});

t.test('sched_setaffinity pins the calling thread only', async (t) => {
  // In a worker, as a queue thread is: the test process itself stays unpinned.
  const src = `
    const { parentPort } = require('node:worker_threads');
    const { readFileSync } = require('node:fs');
    import(${JSON.stringify(new URL('../../sys/native.js', import.meta.url).href)}).then((native) => {
      const mask = new Uint8Array(128);
      mask[0] = 1; // CPU 0
      const r = native.sched_setaffinity(0, mask);
      const mine = /Cpus_allowed_list:\\s*(\\S+)/.exec(readFileSync('/proc/thread-self/status', 'utf8'))[1];
      parentPort.postMessage({ r, mine });
    });
  `;
  const allowed = () => /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync('/proc/thread-self/status', 'utf8'))![1];
  const before = allowed();
  const { Worker } = await import('node:worker_threads');
  const w = new Worker(src, { eval: true });
  const m = await new Promise<{ r: number; mine: string }>((resolve) => w.once('message', resolve));
  await w.terminate();
  t.equal(m.r, 0);
  t.equal(m.mine, '0', 'the worker thread runs on CPU 0 only');
  t.equal(allowed(), before, `the main thread keeps its CPUs (${before})`);
});

t.test('setThreadName names the calling thread only, cut to 15 bytes', async (t) => {
  const src = `
    const { parentPort } = require('node:worker_threads');
    const { readFileSync } = require('node:fs');
    import(${JSON.stringify(new URL('../../sys/thread.js', import.meta.url).href)}).then((thread) => {
      thread.setThreadName('ublk65535q65535-and-more');
      parentPort.postMessage(readFileSync('/proc/thread-self/comm', 'utf8'));
    });
  `;
  const comm = () => readFileSync('/proc/thread-self/comm', 'utf8');
  const before = comm();
  const { Worker } = await import('node:worker_threads');
  const w = new Worker(src, { eval: true });
  const named = await new Promise<string>((resolve) => w.once('message', resolve));
  const threads = readdirSync(`/proc/${process.pid}/task`).map((tid) => readFileSync(`/proc/${process.pid}/task/${tid}/comm`, 'utf8'));
  await w.terminate();
  t.equal(named, 'ublk65535q65535\n', 'the worker reads its own new name');
  t.ok(threads.includes('ublk65535q65535\n'), 'the process lists a thread by that name');
  t.equal(comm(), before, `the main thread keeps its name (${before.trim()})`);
});

t.test('a blocking receive that a signal interrupts goes on (a socket with a timeout is not restarted)', async (t) => {
  const path = join(dir, 'slow.sock');
  const server = spawn(process.execPath, ['-e', "require('net').createServer((s) => setTimeout(() => s.end('ping'), 1000)).listen(process.argv[1])", path]);
  t.teardown(() => server.kill());
  while (!existsSync(path)) await sleep(10);
  let signals = 0;
  const onSignal = () => signals++;
  process.on('SIGUSR2', onSignal); // a handler, so the signal interrupts instead of killing
  const fd = connectStream({ path }, 5000);
  t.teardown(() => file.close(fd));
  const killer = spawn('sh', ['-c', `sleep 0.1; kill -USR2 ${process.pid}`]);
  const buf = Buffer.alloc(4);
  t.equal(recvAll(fd, buf), 4); // blocks this thread through the signal
  const killerDone = () => !existsSync(`/proc/${killer.pid}`) || readFileSync(`/proc/${killer.pid}/stat`, 'utf8').includes(') Z ');
  t.ok(killerDone(), 'the signal came while the receive waited');
  t.equal(buf.toString(), 'ping');
  await once(killer, 'exit');
  while (signals === 0) await sleep(10);
  process.off('SIGUSR2', onSignal);
});
