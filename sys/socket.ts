/**
 * Sockets as file descriptors, where Node's own would not do: unix datagram
 * sockets, which Node's `dgram` does not have (udp only), for systemd's
 * notification protocol (tools/sd-notify.ts); and stream sockets whose fd a
 * queue's io_uring sends and receives on (the nbd target), which Node's
 * `net` keeps to its event loop.
 */
import * as native from './native.js';
import { SysError, check } from './error.js';
import { EAGAIN, EINPROGRESS, EINTR, EISCONN, ETIMEDOUT } from './errno.js';

/** include/linux/socket.h, include/linux/net.h (x86_64). */
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_WAITALL = 0x100;
export const SOL_SOCKET = 1;
/** SO_RCVTIMEO_OLD, SO_SNDTIMEO_OLD: a struct timeval of two longs. */
export const SO_RCVTIMEO = 20;
export const SO_SNDTIMEO = 21;
export const IPPROTO_TCP = 6;
export const TCP_NODELAY = 1;
export const SHUT_RDWR = 2;

/** struct sockaddr_un (include/uapi/linux/un.h): sa_family_t, then a 108-byte path. */
export const struct_sockaddr_un = { SIZE: 110, sun_family: 0, sun_path: 2 } as const;
const UNIX_PATH_MAX = struct_sockaddr_un.SIZE - struct_sockaddr_un.sun_path;

/**
 * The address of `path`, and its length as bind(2) and sendto(2) take it.
 * A path that starts with '@' names the abstract namespace (its first byte
 * becomes NUL, and the length counts no terminating NUL), as systemd writes
 * $NOTIFY_SOCKET.
 */
export function sockaddrUn(path: string): { addr: Buffer; len: number } {
  const abstract = path.startsWith('@');
  const name = Buffer.from(abstract ? '\0' + path.slice(1) : path);
  if (name.length === 0 || name.length + (abstract ? 0 : 1) > UNIX_PATH_MAX) {
    throw new SysError('sockaddr_un', 36 /* ENAMETOOLONG */, path);
  }
  const addr = Buffer.alloc(struct_sockaddr_un.SIZE);
  addr.writeUInt16LE(AF_UNIX, struct_sockaddr_un.sun_family);
  name.copy(addr, struct_sockaddr_un.sun_path);
  return { addr, len: struct_sockaddr_un.sun_path + name.length + (abstract ? 0 : 1) };
}

/** struct msghdr and struct iovec (include/linux/socket.h, include/uapi/linux/uio.h), x86_64. */
export const struct_msghdr = { SIZE: 56, msg_name: 0, msg_namelen: 8, msg_iov: 16, msg_iovlen: 24, msg_control: 32, msg_controllen: 40, msg_flags: 48 } as const;
export const struct_iovec = { SIZE: 16, iov_base: 0, iov_len: 8 } as const;
/** The most iovecs one sendmsg takes (UIO_MAXIOV). */
export const UIO_MAXIOV = 1024;

/** struct sockaddr_in and sockaddr_in6 (include/uapi/linux/in.h, in6.h): the port in network order. */
export const struct_sockaddr_in = { SIZE: 16, sin_family: 0, sin_port: 2, sin_addr: 4 } as const;
export const struct_sockaddr_in6 = { SIZE: 28, sin6_family: 0, sin6_port: 2, sin6_flowinfo: 4, sin6_addr: 8, sin6_scope_id: 24 } as const;

/** Where a stream socket connects: a unix socket's path, or a numeric IPv4/IPv6 address and port. */
export type StreamAddress = { path: string } | { family: 4 | 6; address: string; port: number };

/** The sockaddr of a StreamAddress (the address numeric: resolve names first). */
export function sockaddrOf(to: StreamAddress): { addr: Buffer; len: number } {
  if ('path' in to) return sockaddrUn(to.path);
  if (to.family === 4) {
    const addr = Buffer.alloc(struct_sockaddr_in.SIZE);
    addr.writeUInt16LE(AF_INET, struct_sockaddr_in.sin_family);
    addr.writeUInt16BE(to.port, struct_sockaddr_in.sin_port);
    const parts = to.address.split('.').map(Number);
    parts.forEach((b, i) => addr.writeUInt8(b, struct_sockaddr_in.sin_addr + i));
    return { addr, len: addr.length };
  }
  const addr = Buffer.alloc(struct_sockaddr_in6.SIZE);
  addr.writeUInt16LE(AF_INET6, struct_sockaddr_in6.sin6_family);
  addr.writeUInt16BE(to.port, struct_sockaddr_in6.sin6_port);
  ipv6Bytes(to.address).copy(addr, struct_sockaddr_in6.sin6_addr);
  return { addr, len: addr.length };
}

/** The 16 bytes of a numeric IPv6 address ('::1', 'fe80::1', '::ffff:1.2.3.4'); the caller checked it with net.isIPv6. */
function ipv6Bytes(address: string): Buffer {
  // A dotted IPv4 tail is two more 16-bit groups.
  const text = address.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_, a: string, b: string, c: string, d: string) =>
    [(Number(a) << 8) | Number(b), (Number(c) << 8) | Number(d)].map((w) => w.toString(16)).join(':'),
  );
  const groups = (part: string) => (part === '' ? [] : part.split(':').map((w) => parseInt(w, 16)));
  const [head, tail] = text.split('::');
  const words = tail === undefined ? groups(head) : [...groups(head), ...new Array<number>(8 - groups(head).length - groups(tail).length).fill(0), ...groups(tail)];
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

/**
 * A connected, blocking, close-on-exec stream socket. connect(2) waits at
 * most `timeoutMs` (a blocking connect honours SO_SNDTIMEO), and so does
 * every later send and receive until setTimeouts() changes it. TCP gets
 * TCP_NODELAY: requests are whole messages, Nagle would only delay them.
 */
export function connectStream(to: StreamAddress, timeoutMs: number): number {
  const { addr, len } = sockaddrOf(to);
  const domain = 'path' in to ? AF_UNIX : to.family === 4 ? AF_INET : AF_INET6;
  const fd = check(native.socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0), 'socket');
  try {
    setTimeouts(fd, timeoutMs);
    let r = native.connect(fd, addr, len);
    // A signal: a blocking connect with a timeout is not restarted (signal(7)); calling it again
    // waits for the same attempt, which may have ended meanwhile (EISCONN).
    while (r === -EINTR) {
      r = native.connect(fd, addr, len);
      if (r === -EISCONN) r = 0;
    }
    // A blocking connect that ran out of SO_SNDTIMEO says EINPROGRESS.
    if (r === -EINPROGRESS) throw new SysError('connect', ETIMEDOUT, addressText(to));
    check(r, 'connect', addressText(to));
    if (!('path' in to)) check(native.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, new Int32Array([1]), 4), 'setsockopt');
    return fd;
  } catch (e) {
    native.close(fd);
    throw e;
  }
}

/** How a StreamAddress reads in a message: '/run/x.sock', '127.0.0.1:10809', '[::1]:10809'. */
export function addressText(to: StreamAddress): string {
  if ('path' in to) return to.path;
  return to.family === 6 ? `[${to.address}]:${to.port}` : `${to.address}:${to.port}`;
}

/** SO_RCVTIMEO and SO_SNDTIMEO: blocking calls give up after `ms` (0: wait for ever). */
export function setTimeouts(fd: number, ms: number): void {
  const tv = new BigInt64Array([BigInt(Math.floor(ms / 1000)), BigInt((ms % 1000) * 1000)]);
  check(native.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16), 'setsockopt');
  check(native.setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, tv, 16), 'setsockopt');
}

/** Sends all of `data` (blocking); a timeout is ETIMEDOUT. */
export function sendAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.byteLength) {
    const r = native.sendto(fd, data.subarray(done), data.byteLength - done, MSG_NOSIGNAL, null, 0);
    if (r === -EINTR) continue; // a signal: with a timeout set, the call is not restarted for us
    if (r === -EAGAIN) throw new SysError('send', ETIMEDOUT); // SO_SNDTIMEO ran out
    done += check(r, 'send');
  }
}

/** Fills `buf` (blocking). Returns fewer bytes only at end of stream; a timeout is ETIMEDOUT. */
export function recvAll(fd: number, buf: Uint8Array): number {
  let done = 0;
  while (done < buf.byteLength) {
    const r = native.recv(fd, buf.subarray(done), buf.byteLength - done, MSG_WAITALL);
    if (r === -EINTR) continue; // a signal: with a timeout set, the call is not restarted for us
    if (r === -EAGAIN) throw new SysError('recv', ETIMEDOUT); // SO_RCVTIMEO ran out
    if (check(r, 'recv') === 0) break;
    done += r;
  }
  return done;
}

/** shutdown(fd, SHUT_RDWR): sends and receives in flight end now (an io_uring RECV completes with 0). */
export function shutdownStream(fd: number): void {
  native.shutdown(fd, SHUT_RDWR); // ENOTCONN when the peer went first: it is shut either way
}

/** A close-on-exec unix datagram socket; `nonblocking` for a receiver that polls. */
export function unixDgramSocket(nonblocking = false): number {
  return check(native.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0), 'socket');
}

export function bindUnix(fd: number, path: string): void {
  const { addr, len } = sockaddrUn(path);
  check(native.bind(fd, addr, len), 'bind', path);
}

/** Sends one datagram to the socket bound at `path`. */
export function sendToUnix(fd: number, data: Uint8Array, path: string): void {
  const { addr, len } = sockaddrUn(path);
  check(native.sendto(fd, data, data.byteLength, MSG_NOSIGNAL, addr, len), 'sendto', path);
}

/** One datagram into `buf` without waiting: its length, or -1 when none is queued. */
export function recvNow(fd: number, buf: Uint8Array): number {
  const r = native.recv(fd, buf, buf.byteLength, MSG_DONTWAIT);
  if (r === -EAGAIN) return -1;
  return check(r, 'recv');
}
