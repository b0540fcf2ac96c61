import { constants, fstatSync } from 'node:fs';
import * as native from './native.js';
import { SysError, check } from './error.js';
import { EACCES, EAGAIN } from './errno.js';

/** open(2) flags, from Node's table so they match the platform. */
export const O_RDONLY = constants.O_RDONLY;
export const O_WRONLY = constants.O_WRONLY;
export const O_RDWR = constants.O_RDWR;
export const O_CREAT = constants.O_CREAT;
export const O_EXCL = constants.O_EXCL;
export const O_TRUNC = constants.O_TRUNC;
export const O_NONBLOCK = constants.O_NONBLOCK;
export const O_DIRECT = constants.O_DIRECT ?? 0o40000;
export const O_CLOEXEC = 0o2000000;

/** fallocate(2) modes (include/uapi/linux/falloc.h). */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/** flock(2) operations. */
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/** Block device ioctls (include/uapi/linux/fs.h). */
export const BLKSSZGET = 0x1268; // _IO(0x12, 104): logical block size, int
export const BLKPBSZGET = 0x127b; // _IO(0x12, 123): physical block size, unsigned int
export const BLKGETSIZE64 = 0x80081272; // _IOR(0x12, 114, size_t): bytes, u64

export function open(path: string, flags: number, mode = 0o644): number {
  return check(native.open(path, flags | O_CLOEXEC, mode), 'open', path);
}

export function close(fd: number): void {
  check(native.close(fd), 'close');
}

/** pread(2) into native memory or a typed array; returns the bytes read (short at end of file). */
export function pread(fd: number, buf: native.Ptr, length: number, offset: number): number {
  return check(native.pread(fd, buf, length, offset), 'pread');
}

export function pwrite(fd: number, buf: native.Ptr, length: number, offset: number): number {
  return check(native.pwrite(fd, buf, length, offset), 'pwrite');
}

export function fsync(fd: number): void {
  check(native.fsync(fd), 'fsync');
}

export function fdatasync(fd: number): void {
  check(native.fdatasync(fd), 'fdatasync');
}

export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  check(native.fallocate(fd, mode, offset, length), 'fallocate');
}

export function ftruncate(fd: number, length: number): void {
  check(native.ftruncate(fd, length), 'ftruncate');
}

/** flock(2); returns false when LOCK_NB was given and another holder has the lock. */
export function flock(fd: number, operation: number, path?: string): boolean {
  const r = native.flock(fd, operation);
  if (r === -EAGAIN /* EWOULDBLOCK */) return false;
  check(r, 'flock', path);
  return true;
}

/** struct flock (include/uapi/asm-generic/fcntl.h; x86_64, where off_t is 64 bits). */
export const struct_flock = { SIZE: 32, l_type: 0, l_whence: 2, l_start: 8, l_len: 16, l_pid: 24 } as const;
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;
export const F_OFD_GETLK = 36;
export const F_OFD_SETLK = 37;

/** ENOLCK, EOPNOTSUPP, EINVAL: the filesystem takes no OFD locks. */
const noOfdLocks = (r: number) => r === -37 || r === -95 || r === -22;

function flockOfByte(offset: number, type: number): Buffer {
  const b = Buffer.alloc(struct_flock.SIZE); // l_whence SEEK_SET, l_pid 0 (OFD locks want 0)
  b.writeInt16LE(type, struct_flock.l_type);
  b.writeBigInt64LE(BigInt(offset), struct_flock.l_start);
  b.writeBigInt64LE(1n, struct_flock.l_len);
  return b;
}

/**
 * An open file description lock (F_OFD_SETLK) of `type` on the byte at
 * `offset`, held until the description's last fd closes. Returns false
 * when another description holds a conflicting lock, null when the
 * filesystem does not take such locks.
 */
export function ofdLockByte(fd: number, offset: number, type: number, path?: string): boolean | null {
  const r = native.fcntl_ptr(fd, F_OFD_SETLK, flockOfByte(offset, type));
  if (r === -EAGAIN || r === -EACCES) return false;
  if (noOfdLocks(r)) return null;
  check(r, 'fcntl', path);
  return true;
}

/** Whether another open file description holds a lock on the byte at `offset` that conflicts with `type` (F_OFD_GETLK). */
export function ofdByteLocked(fd: number, offset: number, type: number, path?: string): boolean {
  const b = flockOfByte(offset, type);
  const r = native.fcntl_ptr(fd, F_OFD_GETLK, b);
  if (noOfdLocks(r)) return false;
  check(r, 'fcntl', path);
  return b.readInt16LE(struct_flock.l_type) !== F_UNLCK; // the kernel wrote F_UNLCK: no conflict
}

export interface FileInfo {
  size: number;
  isFile: boolean;
  isBlockDevice: boolean;
  isDirectory: boolean;
  /** st_rdev of a device node, st_dev + st_ino identify a file. */
  rdev: number;
  dev: number;
  ino: number;
}

/** fstat(2), reduced to what the targets need. */
export function fstat(fd: number, path?: string): FileInfo {
  try {
    const st = fstatSync(fd);
    return {
      size: st.size,
      isFile: st.isFile(),
      isBlockDevice: st.isBlockDevice(),
      isDirectory: st.isDirectory(),
      rdev: st.rdev,
      dev: st.dev,
      ino: st.ino,
    };
  } catch (e) {
    const errno = -((e as NodeJS.ErrnoException).errno ?? -5);
    throw new SysError('fstat', errno, path);
  }
}

/** ioctl(2) with a pointer argument; returns the (non-negative) result. */
export function ioctl(fd: number, request: number, arg: native.Ptr, path?: string): number {
  return check(native.ioctl(fd, request, arg), 'ioctl', path);
}

/** BLKGETSIZE64: a block device's size in bytes. */
export function blockDeviceSize(fd: number, path?: string): number {
  const out = new BigUint64Array(1);
  ioctl(fd, BLKGETSIZE64, out, path);
  return Number(out[0]);
}

/** BLKSSZGET: a block device's logical block size in bytes. */
export function blockDeviceLogicalBlockSize(fd: number, path?: string): number {
  const out = new Int32Array(1);
  ioctl(fd, BLKSSZGET, out, path);
  return out[0];
}
