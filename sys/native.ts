/**
 * The one module that loads koffi. Everything else in the project sees the
 * typed functions exported here (and the thin wrappers in this folder).
 *
 * Conventions: addresses are JS numbers (user addresses on x86_64 fit in 47
 * bits, so a number is exact and keeps BigInt out of hot loops); functions
 * named after syscalls return the kernel's result, `-errno` on failure, and
 * never throw — the wrappers in file.ts, memory.ts … turn the exceptional
 * ones into SysError.
 */
import { createRequire } from 'node:module';
import type * as Koffi from 'koffi';

// The syscall numbers below are x86_64's: anywhere else they name other calls.
if (process.arch !== 'x64') {
  throw new Error(`ublk-ts runs on x86_64 only (its syscall numbers are x86_64's), not on ${process.arch}`);
}

const koffi = createRequire(import.meta.url)('koffi') as typeof Koffi;
const libc = koffi.load('libc.so.6');

// x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
const SYS_io_setup = 206;
const SYS_io_destroy = 207;
const SYS_io_getevents = 208;
const SYS_io_submit = 209;
const SYS_io_uring_setup = 425;
const SYS_io_uring_enter = 426;
const SYS_io_uring_register = 427;
const SYS_fcntl = 72;

// Fixed-arity views of the variadic syscall(2): koffi's variadic calls cost
// about twice as much (koffi-notes §1), and glibc's syscall() ignores %al.
const syscall1 = libc.func('syscall', 'long', ['long', 'long']);
const syscall2p = libc.func('syscall', 'long', ['long', 'long', 'void *']);
const syscall3 = libc.func('syscall', 'long', ['long', 'long', 'long', 'long']);
const syscall3p = libc.func('syscall', 'long', ['long', 'long', 'long', 'void *']);
const syscall5pp = libc.func('syscall', 'long', ['long', 'long', 'long', 'long', 'void *', 'void *']);
// The request path's calls take addresses as uintptr_t, not void *: koffi
// checks the type of a `void *` argument on every call, and a `void *` result
// is a new BigInt. On this host memcpy(3) went from 97 to 68 ns a call and
// io_uring_enter with a null `void *` cost 60 ns more; under TCG a koffi call
// costs about 1 µs (docs/request-cost.md, bench/ublk/op-cost).
const syscall_enter = libc.func('syscall', 'long', ['long', 'int', 'uint', 'uint', 'uint', 'uintptr_t', 'size_t']);
const syscall_register = libc.func('syscall', 'long', ['long', 'int', 'uint', 'void *', 'uint']);

const c_open = libc.func('int open(const char *path, int flags, ...)');
const c_close = libc.func('int close(int fd)');
const c_read = libc.func('long read(int fd, void *buf, size_t count)');
const c_write = libc.func('long write(int fd, const void *buf, size_t count)');
const c_pread = libc.func('long pread64(int fd, void *buf, size_t count, int64_t offset)');
const c_pwrite = libc.func('long pwrite64(int fd, const void *buf, size_t count, int64_t offset)');
const c_fsync = libc.func('int fsync(int fd)');
const c_fdatasync = libc.func('int fdatasync(int fd)');
const c_fallocate = libc.func('int fallocate64(int fd, int mode, int64_t offset, int64_t len)');
const c_ftruncate = libc.func('int ftruncate64(int fd, int64_t length)');
const c_ioctl = libc.func('int ioctl(int fd, unsigned long request, void *arg)');
const c_mmap = libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)');
const c_munmap = libc.func('int munmap(void *addr, size_t length)');
const c_posix_memalign = libc.func('int posix_memalign(_Out_ void **memptr, size_t alignment, size_t size)');
const c_free = libc.func('void free(void *ptr)');
const c_memcpy = libc.func('memcpy', 'void', ['uintptr_t', 'uintptr_t', 'size_t']);
const c_eventfd = libc.func('int eventfd(unsigned int initval, int flags)');
const c_strerror = libc.func('const char *strerror(int errnum)');
const c_flock = libc.func('int flock(int fd, int operation)');
const c_sched_setaffinity = libc.func('int sched_setaffinity(int pid, size_t cpusetsize, const void *mask)');
const c_socket = libc.func('int socket(int domain, int type, int protocol)');
const c_bind = libc.func('int bind(int fd, const void *addr, uint addrlen)');
const c_sendto = libc.func('long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint addrlen)');
const c_recv = libc.func('long recv(int fd, void *buf, size_t len, int flags)');
const c_recv_at = libc.func('recv', 'long', ['int', 'uintptr_t', 'size_t', 'int']);
const c_connect = libc.func('int connect(int fd, const void *addr, uint addrlen)');
const c_setsockopt = libc.func('int setsockopt(int fd, int level, int name, const void *value, uint len)');
const c_shutdown = libc.func('int shutdown(int fd, int how)');

/** A pointer argument: an address, or JS memory whose data pointer koffi passes without copying. */
export type Ptr = number | bigint | ArrayBufferView | ArrayBuffer | null;

function res(r: number | bigint): number {
  // A `long` return is a JS number within ±2^53 (koffi-notes §1).
  const n = Number(r);
  return n < 0 ? -koffi.errno() : n;
}

export function strerror(errno: number): string {
  return c_strerror(errno) as string;
}

/** An external ArrayBuffer over native memory (no copy, no finalizer). Costs ~2 µs: create once. */
export function view(addr: number | bigint, length: number): ArrayBuffer {
  return koffi.view(BigInt(addr), length);
}

/** The address of JS-owned memory (a Buffer, TypedArray or ArrayBuffer). */
export function addressOf(mem: ArrayBufferView | ArrayBuffer): number {
  return Number(koffi.address(mem));
}

export function open(path: string, flags: number, mode: number): number {
  return res(c_open(path, flags, 'int', mode));
}
export function close(fd: number): number {
  return res(c_close(fd));
}
export function read(fd: number, buf: Ptr, count: number): number {
  return res(c_read(fd, buf, count));
}
export function write(fd: number, buf: Ptr, count: number): number {
  return res(c_write(fd, buf, count));
}
export function pread(fd: number, buf: Ptr, count: number, offset: number): number {
  return res(c_pread(fd, buf, count, offset));
}
export function pwrite(fd: number, buf: Ptr, count: number, offset: number): number {
  return res(c_pwrite(fd, buf, count, offset));
}
export function fsync(fd: number): number {
  return res(c_fsync(fd));
}
export function fdatasync(fd: number): number {
  return res(c_fdatasync(fd));
}
export function fallocate(fd: number, mode: number, offset: number, len: number): number {
  return res(c_fallocate(fd, mode, offset, len));
}
export function ftruncate(fd: number, length: number): number {
  return res(c_ftruncate(fd, length));
}
export function ioctl(fd: number, request: number, arg: Ptr): number {
  return res(c_ioctl(fd, request, arg));
}
export function flock(fd: number, operation: number): number {
  return res(c_flock(fd, operation));
}
/** fcntl(2) with a pointer argument (F_OFD_GETLK, F_OFD_SETLK: a struct flock). */
export function fcntl_ptr(fd: number, cmd: number, arg: Ptr): number {
  return res(syscall3p(SYS_fcntl, fd, cmd, arg));
}
/** sched_setaffinity(2); pid 0 is the calling thread. */
export function sched_setaffinity(pid: number, mask: Uint8Array): number {
  return res(c_sched_setaffinity(pid, mask.byteLength, mask));
}
export function socket(domain: number, type: number, protocol: number): number {
  return res(c_socket(domain, type, protocol));
}
export function bind(fd: number, addr: Ptr, addrlen: number): number {
  return res(c_bind(fd, addr, addrlen));
}
export function sendto(fd: number, buf: Ptr, len: number, flags: number, addr: Ptr, addrlen: number): number {
  return res(c_sendto(fd, buf, len, flags, addr, addrlen));
}
export function recv(fd: number, buf: Ptr, len: number, flags: number): number {
  return res(c_recv(fd, buf, len, flags));
}
/** recv(2) into native memory at `addr` (the request path's: cheaper than a Ptr). */
export function recvAt(fd: number, addr: number, len: number, flags: number): number {
  return res(c_recv_at(fd, addr, len, flags));
}
export function connect(fd: number, addr: Ptr, addrlen: number): number {
  return res(c_connect(fd, addr, addrlen));
}
export function setsockopt(fd: number, level: number, name: number, value: Ptr, len: number): number {
  return res(c_setsockopt(fd, level, name, value, len));
}
export function shutdown(fd: number, how: number): number {
  return res(c_shutdown(fd, how));
}
export function eventfd(initval: number, flags: number): number {
  return res(c_eventfd(initval, flags));
}

/** mmap(2); returns the address, or -errno (MAP_FAILED is all ones in koffi 3). */
export function mmap(length: number, prot: number, flags: number, fd: number, offset: number): number {
  const p = c_mmap(null, length, prot, flags, fd, offset) as bigint;
  if (p === 0xffffffffffffffffn) return -koffi.errno();
  return Number(p);
}
export function munmap(addr: number, length: number): number {
  return res(c_munmap(addr, length));
}

/** posix_memalign(3); returns the address, or -errno. */
export function posixMemalign(alignment: number, size: number): number {
  const out: [bigint | null] = [null];
  const err = c_posix_memalign(out, alignment, size) as number;
  if (err !== 0) return -err;
  return Number(out[0]);
}
/**
 * memcpy(3) between native addresses, with no JS view to make. Addresses
 * above 2^31 are not Smis: each is a new HeapNumber per call, so a request
 * path copies with QueueContext.copyFromScratch() instead.
 */
export function memcpy(dst: number, src: number, n: number): void {
  c_memcpy(dst, src, n);
}

export function free(addr: number): void {
  c_free(addr);
}

// Kernel AIO (include/uapi/linux/aio_abi.h); `ctx` is the aio_ring address.
export function io_setup(nrEvents: number, ctxp: BigUint64Array): number {
  return res(syscall2p(SYS_io_setup, nrEvents, ctxp));
}
export function io_destroy(ctx: number): number {
  return res(syscall1(SYS_io_destroy, ctx));
}
export function io_submit(ctx: number, nr: number, iocbpp: number): number {
  return res(syscall3(SYS_io_submit, ctx, nr, iocbpp));
}
export function io_getevents(ctx: number, minNr: number, nr: number, events: number, timeout: Ptr): number {
  return res(syscall5pp(SYS_io_getevents, ctx, minNr, nr, events, timeout));
}

// io_uring (include/uapi/linux/io_uring.h).
export function io_uring_setup(entries: number, params: Uint8Array): number {
  return res(syscall2p(SYS_io_uring_setup, entries, params));
}
export function io_uring_enter(fd: number, toSubmit: number, minComplete: number, flags: number): number {
  return res(syscall_enter(SYS_io_uring_enter, fd, toSubmit, minComplete, flags, 0, 0));
}
export function io_uring_register(fd: number, opcode: number, arg: Ptr, nrArgs: number): number {
  return res(syscall_register(SYS_io_uring_register, fd, opcode, arg, nrArgs));
}

/** A shared library's functions, each declared by its C prototype. */
export interface Library {
  func(prototype: string): (...args: unknown[]) => unknown;
}

/**
 * dlopen()s a library for a binding in this folder that needs it only when
 * used (librbd: sys/rbd.ts); throws when the library is not installed.
 */
export function loadLibrary(soname: string): Library {
  return koffi.load(soname) as unknown as Library;
}

/**
 * Calls `onReadable` whenever `fd` polls readable, on this thread's event
 * loop (a libuv poll handle inside koffi). Returns a function that stops it.
 */
export function pollReadable(fd: number, onReadable: () => void): { close(): void; unref(): void; ref(): void } {
  // koffi 3.3.4 calls back with (status, events), not the (events) its .d.ts says (koffi-notes pitfall 6).
  return koffi.node.poll(fd, { readable: true }, onReadable as never);
}
