/**
 * The NBD lines' server and reference client (issue 17): one nbdkit memory
 * export for the whole run, served to the ublk-ts nbd target and to the
 * kernel's own nbd client, which Debian's nbd-client (bench/ublk/setup
 * installs it) connects over netlink and then leaves to the kernel.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { run, sleepSync } from './exec.js';

export interface NbdServer {
  /** nbd+unix:///?socket=PATH (the default export) */
  url: string;
  socket: string;
  pid: number;
  child: ChildProcess;
}

/**
 * `nbdkit memory SIZE` on a unix socket, in the foreground and tied to this
 * process (--exit-with-parent), so a bench that dies leaves no server behind.
 * Returns once nbdkit listens: it writes its pid file then (-f: the pid is the child's).
 */
export function startNbdkit(socket: string, size: number): NbdServer {
  const pidFile = `${socket}.pid`;
  rmSync(pidFile, { force: true });
  rmSync(socket, { force: true });
  const child = spawn('nbdkit', ['-U', socket, '-P', pidFile, '-f', '--exit-with-parent', 'memory', String(size)], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 100 && !existsSync(pidFile); i++) sleepSync(0.1);
  if (!existsSync(pidFile)) {
    child.kill('SIGKILL');
    throw new Error(`nbdkit did not listen on ${socket} within 10 s`);
  }
  return { url: `nbd+unix:///?socket=${socket}`, socket, pid: child.pid!, child };
}

/** Stops nbdkit and waits (5 s at most) until it has exited and its memory is free. */
export function stopNbdkit(s: NbdServer): void {
  s.child.kill('SIGTERM');
  for (let i = 0; i < 50 && running(s.pid); i++) sleepSync(0.1);
}

/** Neither gone nor a zombie (this process is blocked in sync calls and reaps nobody until it returns). */
function running(pid: number): boolean {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

/**
 * Writes the whole export once with fio's nbd engine (libnbd, neither of the
 * clients measured), so that every read of the read lines returns data the
 * server stored: an empty memory export answers reads of holes with zeroes
 * it never stored, a cheaper path than a real read. fio's buffers are random
 * bytes, not zeroes, so the server keeps every page.
 */
export function prefill(s: NbdServer, size: number): void {
  run('fio', ['--name=prefill', '--ioengine=nbd', `--uri=${s.url}`, '--rw=write', '--bs=1M', '--iodepth=8', `--size=${size}`, '--output-format=json']);
}

/** Why fio cannot write to an NBD server ('' when its nbd engine is there). */
export function fioNbdMissing(): string {
  return /^\s*nbd$/m.test(run('fio', ['--enghelp'])) ? '' : 'fio has no nbd engine (libnbd)';
}

/**
 * The kernel nbd client on `dev`, `connections` sockets to the server (one
 * per hardware queue: nbd-client -connections, the kernel side of
 * multi-conn). The disk gets the scheduler ublk-ts uses (none), so that the
 * comparison is of clients, not of schedulers.
 */
export function connectKernelNbd(s: NbdServer, dev: string, connections: number): void {
  run('nbd-client', ['-unix', s.socket, dev, '-connections', String(connections)]);
  const sys = `/sys/block/${basename(dev)}`;
  for (let i = 0; i < 100 && Number(readFileSync(`${sys}/size`, 'utf8')) === 0; i++) sleepSync(0.1);
  if (Number(readFileSync(`${sys}/size`, 'utf8')) === 0) throw new Error(`${dev}: nbd-client returned, but the disk has no size after 10 s`);
  writeFileSync(`${sys}/queue/scheduler`, 'none');
}

/** Disconnects and waits until the kernel let go of the device: the next line connects it again. */
export function disconnectKernelNbd(dev: string): void {
  run('nbd-client', ['-d', dev]);
  const size = `/sys/block/${basename(dev)}/size`;
  for (let i = 0; i < 100 && Number(readFileSync(size, 'utf8')) !== 0; i++) sleepSync(0.1);
}
