import { getSystemErrorName } from 'node:util';
import { strerror } from './native.js';

/**
 * A failed system call, shaped like Node's `SystemError`: `code` ('ENOENT'),
 * `errno` (negative, as Node reports it), `syscall`, and `path` when there is
 * one. The message reads `open '/x': No such file or directory`.
 */
export class SysError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  readonly path?: string;

  /** @param errno the positive errno value the call failed with */
  constructor(syscall: string, errno: number, path?: string) {
    const where = path === undefined ? syscall : `${syscall} '${path}'`;
    super(`${where}: ${strerror(errno)}`);
    this.name = 'SysError';
    this.code = errnoName(errno);
    this.errno = -errno;
    this.syscall = syscall;
    if (path !== undefined) this.path = path;
  }
}

/** 'ENOENT' for 2; 'E<n>' for a number Node does not know. */
export function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-Math.abs(errno));
  } catch {
    return `E${Math.abs(errno)}`;
  }
}

/** Throws a SysError for a kernel result that is a negative errno; returns it otherwise. */
export function check(res: number, syscall: string, path?: string): number {
  if (res < 0) throw new SysError(syscall, -res, path);
  return res;
}
