/**
 * Opening a target's backing file or block device (daemon main thread):
 * every reason it cannot serve becomes one clear TargetError.
 */
import { accessSync, constants, realpathSync, statSync } from 'node:fs';
import { SysError } from '../sys/error.js';
import * as file from '../sys/file.js';
import { NativeMemory } from '../sys/memory.js';
import { TargetError } from './target.js';
import { PROBE_BYTES, probe } from './image-format.js';

export interface Backing {
  path: string;
  /** The canonical path (symlinks resolved): what the device holds exclusively. */
  realPath: string;
  fd: number;
  size: number;
  logicalBlockSize: number;
  blockDevice: boolean;
  direct: boolean;
  readOnly: boolean;
  /** Said on stderr by `ublk add` (e.g. the O_DIRECT fallback). */
  warnings: string[];
}

export interface BackingOptions {
  readOnly: boolean;
  /**
   * 'disk' (default): a raw disk, and a file that starts like a disk image
   * format is refused; 'raw': any file, served as its bytes; 'image': a
   * container the caller parses (no probe, any size).
   */
  contents?: 'disk' | 'raw' | 'image';
  /** 'exclusive' (default): no other ublk-ts device may open it; 'shared': only read-only sharers (a backing image). */
  lock?: 'exclusive' | 'shared';
}

/** A SysError as one line naming the path. */
export function fail(path: string, e: unknown): never {
  if (e instanceof SysError) {
    const reason = e.message.slice(e.message.indexOf(':') + 2);
    throw new TargetError(`${path}: ${reason}`);
  }
  throw e;
}

/**
 * Opens `path` with O_DIRECT when its filesystem takes it, and takes a
 * flock so no second ublk-ts device can write the same file (exclusive), or
 * so that only readers share it (shared). The caller closes `fd` (which
 * drops the lock).
 */
export function openBacking(path: string, options: BackingOptions): Backing {
  const readOnly = options.readOnly;
  const contents = options.contents ?? 'disk';
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new TargetError(`${path}: No such file or directory`);
    throw new TargetError(`${path}: ${err.message}`);
  }
  if (st.isDirectory()) throw new TargetError(`${path} is a directory, not a file or block device`);
  if (!st.isFile() && !st.isBlockDevice()) throw new TargetError(`${path} is not a regular file or block device`);
  if (!readOnly) {
    // root passes access(2) for any mode bits on files, so look at them too.
    let writable = true;
    try {
      accessSync(path, constants.W_OK);
    } catch {
      writable = false;
    }
    if (!writable || (st.isFile() && (st.mode & 0o222) === 0)) {
      throw new TargetError(`${path} is read-only (use --read-only to serve it read-only)`);
    }
  }
  const flags = readOnly ? file.O_RDONLY : file.O_RDWR;
  const warnings: string[] = [];
  let direct = true;
  let fd: number;
  try {
    fd = file.open(path, flags | file.O_DIRECT);
  } catch (e) {
    if (e instanceof SysError && e.code === 'EINVAL') {
      direct = false;
      warnings.push(`${path}: its filesystem refuses O_DIRECT; serving it with buffered IO (slower, and kernel AIO runs synchronously)`);
      try {
        fd = file.open(path, flags);
      } catch (e2) {
        fail(path, e2);
      }
    } else if (e instanceof SysError && e.code === 'EROFS') {
      throw new TargetError(`${path} is on a read-only filesystem (use --read-only to serve it read-only)`);
    } else {
      fail(path, e);
    }
  }
  try {
    if (!file.flock(fd, (options.lock === 'shared' ? file.LOCK_SH : file.LOCK_EX) | file.LOCK_NB, path)) {
      throw new TargetError(`${path} is already used by another ublk-ts device (see ublk list)`, { held: realpathSync(path) });
    }
    takeQemuLock(fd, path, !readOnly);
    const info = file.fstat(fd, path);
    const blockDevice = info.isBlockDevice;
    const size = blockDevice ? file.blockDeviceSize(fd, path) : info.size;
    let logicalBlockSize = blockDevice ? file.blockDeviceLogicalBlockSize(fd, path) : 512;
    if (!blockDevice && direct && size >= 4096) logicalBlockSize = directIoAlignment(fd);
    if (size === 0) throw new TargetError(`${path} is empty`);
    // Before the size checks: an image's size says nothing about its disk's.
    if (contents === 'disk') refuseImage(fd, path);
    if (contents !== 'image' && size % logicalBlockSize !== 0) {
      throw new TargetError(`${path}: its size ${size} is not a multiple of the logical block size ${logicalBlockSize}`);
    }
    return { path, realPath: realpathSync(path), fd, size, logicalBlockSize, blockDevice, direct, readOnly, warnings };
  } catch (e) {
    file.close(fd);
    throw e;
  }
}

// qemu's image locking (block/file-posix.c): a process holds a read lock on
// byte 100+i for each permission i it uses and on byte 200+i for each it
// denies everyone else. 0 consistent read, 1 write, 3 resize.
const PERM_BASE = 100;
const SHARED_BASE = 200;
const PERM_READ = 0;
const PERM_WRITE = 1;
const PERM_RESIZE = 3;

/**
 * Takes the locks qemu takes on an image it reads (and writes): qemu,
 * qemu-nbd and qemu-img then refuse to write what we serve, or to open
 * what we write, and we refuse a file one of them holds. The locks go with
 * the last fd of this open file description.
 */
function takeQemuLock(fd: number, path: string, write: boolean): void {
  const used = write ? [PERM_READ, PERM_WRITE, PERM_RESIZE] : [PERM_READ];
  const denied = [PERM_WRITE, PERM_RESIZE];
  for (const p of used) if (file.ofdLockByte(fd, PERM_BASE + p, file.F_RDLCK, path) === null) return; // no such locks here
  for (const p of denied) file.ofdLockByte(fd, SHARED_BASE + p, file.F_RDLCK, path);
  // Locked first, checked after (as qemu): of two openers at once, neither misses the other.
  const clash = used.some((p) => file.ofdByteLocked(fd, SHARED_BASE + p, file.F_WRLCK, path)) || denied.some((p) => file.ofdByteLocked(fd, PERM_BASE + p, file.F_WRLCK, path));
  if (clash) {
    throw new TargetError(`${path} is in use by another program that holds its qemu image lock (qemu, qemu-nbd, qemu-img)${write ? '' : ' and writes it'}`);
  }
}

/** Throws when the file starts like a disk image format, which served raw would show its container, not its disk. */
function refuseImage(fd: number, path: string): void {
  const buf = NativeMemory.aligned(PROBE_BYTES); // O_DIRECT: aligned buffer, offset and length
  let format;
  try {
    const n = file.pread(fd, buf.addr, PROBE_BYTES, 0);
    format = probe(new Uint8Array(buf.buffer, 0, n));
  } catch (e) {
    fail(path, e);
  } finally {
    buf.free();
  }
  if (format !== null) {
    throw new TargetError(`${path} is a ${format.name} image: ${format.hint} (or --raw to serve its bytes as they are)`);
  }
}

/** The smallest O_DIRECT alignment the file takes: 512, or 4096 on a 4K-sector disk. */
export function directIoAlignment(fd: number): number {
  const buf = NativeMemory.aligned(4096);
  try {
    file.pread(fd, buf.addr, 512, 512);
    return 512;
  } catch (e) {
    if (e instanceof SysError && e.code === 'EINVAL') return 4096;
    throw e;
  } finally {
    buf.free();
  }
}
