import * as native from './native.js';
import { SysError, check } from './error.js';

export const PAGE_SIZE = 4096;

export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_POPULATE = 0x8000;

/**
 * Native memory at a fixed address, with one zero-copy view made once.
 * Either aligned heap memory (posix_memalign) or a mapping (mmap); `free()`
 * releases it, after which the views must not be touched.
 */
export class NativeMemory {
  readonly addr: number;
  readonly size: number;
  /** The whole region; typed arrays over it alias the native memory. */
  readonly buffer: ArrayBuffer;
  private readonly mapped: boolean;
  private freed = false;

  private constructor(addr: number, size: number, mapped: boolean) {
    this.addr = addr;
    this.size = size;
    this.mapped = mapped;
    this.buffer = native.view(addr, size);
  }

  /** `size` bytes aligned to `alignment` (a power of two), zero-filled. */
  static aligned(size: number, alignment = PAGE_SIZE): NativeMemory {
    const addr = native.posixMemalign(alignment, Math.max(size, 1));
    if (addr < 0) throw new SysError('posix_memalign', -addr);
    const mem = new NativeMemory(addr, size, false);
    new Uint8Array(mem.buffer).fill(0);
    return mem;
  }

  /**
   * `size` bytes of private anonymous memory: page-aligned and zero, and a
   * page takes RAM only once something touches it (the kernel's copy of a
   * request, an O_DIRECT read), where aligned() zeroes every page up front.
   */
  static anonymous(size: number): NativeMemory {
    return NativeMemory.map(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  }

  /** mmap(2) of `fd` (or anonymous memory when fd is -1). */
  static map(size: number, prot: number, flags: number, fd: number, offset: number, path?: string): NativeMemory {
    const addr = native.mmap(size, prot, flags, fd, offset);
    if (addr < 0) throw new SysError('mmap', -addr, path);
    return new NativeMemory(addr, size, true);
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    if (this.mapped) check(native.munmap(this.addr, this.size), 'munmap');
    else native.free(this.addr);
  }
}

export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
