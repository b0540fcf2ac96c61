/**
 * Unix datagram sockets, which Node's `dgram` does not have (udp only):
 * what systemd's notification protocol needs (tools/sd-notify.ts).
 */
import * as native from './native.js';
import { SysError, check } from './error.js';

/** include/linux/socket.h, include/linux/net.h (x86_64). */
export const AF_UNIX = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;

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
  if (r === -11 /* EAGAIN */) return -1;
  return check(r, 'recv');
}
