/**
 * Kernel AIO structures (include/uapi/linux/aio_abi.h, fs/aio.c), pinned by
 * tests/unit/aio-layout.test.ts, and the table of pre-built iocbs: one per
 * tag, in native memory, filled through a Uint32Array made once.
 */
import { NativeMemory } from '../sys/memory.js';

/** struct iocb: 64 bytes. */
export const iocb = {
  SIZE: 64,
  aio_data: 0, // u64, returned in io_event.data: the tag
  aio_key: 8, // u32, the kernel writes KIOCB_KEY (0) here at submit
  aio_rw_flags: 12, // i32, RWF_*
  aio_lio_opcode: 16, // u16, IOCB_CMD_*
  aio_reqprio: 18, // i16
  aio_fildes: 20, // u32
  aio_buf: 24, // u64
  aio_nbytes: 32, // u64
  aio_offset: 40, // i64
  aio_reserved2: 48, // u64, must be 0 (EINVAL otherwise)
  aio_flags: 56, // u32, IOCB_FLAG_*
  aio_resfd: 60, // u32, eventfd signalled when IOCB_FLAG_RESFD
} as const;

/** struct io_event: 32 bytes. */
export const io_event = {
  SIZE: 32,
  data: 0, // u64, iocb.aio_data
  obj: 8, // u64, the user iocb's address
  res: 16, // i64, bytes or -errno
  res2: 24, // i64
} as const;

/**
 * struct aio_ring (fs/aio.c, not in the uapi header): the ring io_setup maps
 * into the process; `aio_context_t` is its address. `head` is written by
 * userspace (and by io_getevents), `tail` by the kernel.
 */
export const aio_ring = {
  SIZE: 32,
  id: 0,
  nr: 4, // number of io_events, may exceed what io_setup was asked
  head: 8, // khead: consumer index, < nr
  tail: 12, // ktail: producer index, < nr
  magic: 16,
  compat_features: 20,
  incompat_features: 24,
  header_length: 28,
  io_events: 32,
} as const;

export const AIO_RING_MAGIC = 0xa10a10a1;
export const AIO_RING_COMPAT_FEATURES = 1;
export const AIO_RING_INCOMPAT_FEATURES = 0;

// enum { IOCB_CMD_* } in aio_abi.h.
export const IOCB_CMD_PREAD = 0;
export const IOCB_CMD_PWRITE = 1;
export const IOCB_CMD_FSYNC = 2;
export const IOCB_CMD_FDSYNC = 3;
export const IOCB_CMD_POLL = 5;
export const IOCB_CMD_NOOP = 6;
export const IOCB_CMD_PREADV = 7;
export const IOCB_CMD_PWRITEV = 8;

/** iocb.aio_flags */
export const IOCB_FLAG_RESFD = 1 << 0;
export const IOCB_FLAG_IOPRIO = 1 << 1;

/** iocb.aio_rw_flags (include/uapi/linux/fs.h) */
export const RWF_HIPRI = 0x1;
export const RWF_DSYNC = 0x2;
export const RWF_SYNC = 0x4;
export const RWF_NOWAIT = 0x8;

const TWO32 = 4294967296;
const U32_PER_IOCB = iocb.SIZE / 4;

/**
 * `depth` iocbs (iocb[tag], aio_data = tag) and the `struct iocb *[]` that
 * io_submit reads, in one page-aligned native block. Only the fields an IO
 * changes are written per IO; aio_data, aio_flags and aio_resfd are set once.
 */
export class IocbTable {
  readonly depth: number;
  /** Address of iocb[0]; iocb[tag] is at base + tag * 64. */
  readonly base: number;
  /** Address of the `struct iocb *` array (depth entries). */
  readonly ptrs: number;
  private readonly mem: NativeMemory;
  private readonly u32: Uint32Array;
  private readonly ptr32: Uint32Array;

  /** @param resfd an eventfd to signal on each completion (IOCB_FLAG_RESFD), or -1 */
  constructor(depth: number, resfd: number) {
    this.depth = depth;
    this.mem = NativeMemory.aligned(depth * (iocb.SIZE + 8));
    this.base = this.mem.addr;
    this.ptrs = this.mem.addr + depth * iocb.SIZE;
    this.u32 = new Uint32Array(this.mem.buffer, 0, depth * U32_PER_IOCB);
    this.ptr32 = new Uint32Array(this.mem.buffer, depth * iocb.SIZE, depth * 2);
    for (let tag = 0; tag < depth; tag++) {
      const b = tag * U32_PER_IOCB;
      this.u32[b + iocb.aio_data / 4] = tag;
      if (resfd >= 0) {
        this.u32[b + iocb.aio_flags / 4] = IOCB_FLAG_RESFD;
        this.u32[b + iocb.aio_resfd / 4] = resfd;
      }
    }
  }

  /** Fills iocb[tag] for PREAD/PWRITE. Addresses and offsets are numbers < 2^53. */
  prepRw(tag: number, opcode: number, fd: number, buf: number, len: number, offset: number, rwFlags: number): void {
    const u = this.u32;
    const b = tag * U32_PER_IOCB;
    u[b + 3] = rwFlags; // aio_rw_flags
    u[b + 4] = opcode; // aio_lio_opcode (u16) + aio_reqprio 0
    u[b + 5] = fd; // aio_fildes
    u[b + 6] = buf % TWO32; // aio_buf lo
    u[b + 7] = buf / TWO32; // aio_buf hi (a Uint32Array store truncates)
    u[b + 8] = len; // aio_nbytes lo
    u[b + 9] = 0;
    u[b + 10] = offset % TWO32; // aio_offset lo
    u[b + 11] = offset / TWO32;
  }

  /** Fills iocb[tag] for FSYNC/FDSYNC: buf, nbytes, offset and rw_flags must be 0 (aio_fsync() in fs/aio.c). */
  prepSync(tag: number, opcode: number, fd: number): void {
    const u = this.u32;
    const b = tag * U32_PER_IOCB;
    u[b + 3] = 0;
    u[b + 4] = opcode;
    u[b + 5] = fd;
    u[b + 6] = 0;
    u[b + 7] = 0;
    u[b + 8] = 0;
    u[b + 9] = 0;
    u[b + 10] = 0;
    u[b + 11] = 0;
  }

  opcode(tag: number): number {
    return this.u32[tag * U32_PER_IOCB + 4] & 0xffff;
  }

  /** aio_nbytes (the engine never queues 4 GiB or more in one iocb). */
  nbytes(tag: number): number {
    return this.u32[tag * U32_PER_IOCB + 8];
  }

  /** Points `struct iocb *[slot]` at iocb[tag]. */
  setPtr(slot: number, tag: number): void {
    const p = this.base + tag * iocb.SIZE;
    this.ptr32[slot * 2] = p % TWO32;
    this.ptr32[slot * 2 + 1] = p / TWO32;
  }

  /** Moves pointer slots [from, from + n) to [0, n). */
  compact(from: number, n: number): void {
    this.ptr32.copyWithin(0, from * 2, (from + n) * 2);
  }

  free(): void {
    this.mem.free();
  }
}
