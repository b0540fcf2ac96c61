/**
 * Byte offsets of the io_uring structures (include/uapi/linux/io_uring.h),
 * pinned by tests/unit/uring-layout.test.ts.
 */

/** struct io_uring_params: 120 bytes. */
export const io_uring_params = {
  SIZE: 120,
  sq_entries: 0,
  cq_entries: 4,
  flags: 8,
  sq_thread_cpu: 12,
  sq_thread_idle: 16,
  features: 20,
  wq_fd: 24,
  sq_off: 40,
  cq_off: 80,
} as const;

/** struct io_sqring_offsets (40 bytes, at io_uring_params.sq_off). */
export const io_sqring_offsets = {
  SIZE: 40,
  head: 0,
  tail: 4,
  ring_mask: 8,
  ring_entries: 12,
  flags: 16,
  dropped: 20,
  array: 24,
  user_addr: 32,
} as const;

/** struct io_cqring_offsets (40 bytes, at io_uring_params.cq_off). */
export const io_cqring_offsets = {
  SIZE: 40,
  head: 0,
  tail: 4,
  ring_mask: 8,
  ring_entries: 12,
  overflow: 16,
  cqes: 20,
  flags: 24,
  user_addr: 32,
} as const;

/** struct io_uring_sqe: 64 bytes, or 128 with IORING_SETUP_SQE128 (cmd[] grows to 80). */
export const io_uring_sqe = {
  SIZE: 64,
  SIZE128: 128,
  opcode: 0,
  flags: 1,
  ioprio: 2,
  fd: 4,
  off: 8, // also cmd_op (u32) for IORING_OP_URING_CMD
  addr: 16,
  len: 24,
  rw_flags: 28, // also fsync_flags, poll32_events
  user_data: 32,
  buf_index: 40,
  personality: 42,
  file_index: 44,
  addr3: 48, // also cmd[]
  cmd: 48,
} as const;

/** struct io_uring_cqe: 16 bytes, or 32 with IORING_SETUP_CQE32 (big_cqe[2]). */
export const io_uring_cqe = {
  SIZE: 16,
  SIZE32: 32,
  user_data: 0,
  res: 8,
  flags: 12,
} as const;

/** struct __kernel_timespec (include/uapi/linux/time_types.h): what IORING_OP_TIMEOUT points at. */
export const kernel_timespec = { SIZE: 16, tv_sec: 0, tv_nsec: 8 } as const;
