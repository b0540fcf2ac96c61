/**
 * The ublk UAPI (include/uapi/linux/ublk_cmd.h, Linux 6.12): opcodes, flags
 * and struct offsets under their C names. Pinned by tests/unit/ublk-layout.test.ts.
 */

// Control commands on /dev/ublk-control (ioctl-encoded, UBLK_F_CMD_IOCTL_ENCODE).
export const UBLK_U_CMD_GET_QUEUE_AFFINITY = 0x80207501;
export const UBLK_U_CMD_GET_DEV_INFO = 0x80207502;
export const UBLK_U_CMD_ADD_DEV = 0xc0207504;
export const UBLK_U_CMD_DEL_DEV = 0xc0207505;
export const UBLK_U_CMD_START_DEV = 0xc0207506;
export const UBLK_U_CMD_STOP_DEV = 0xc0207507;
export const UBLK_U_CMD_SET_PARAMS = 0xc0207508;
export const UBLK_U_CMD_GET_PARAMS = 0x80207509;
export const UBLK_U_CMD_START_USER_RECOVERY = 0xc0207510;
export const UBLK_U_CMD_END_USER_RECOVERY = 0xc0207511;
export const UBLK_U_CMD_GET_DEV_INFO2 = 0x80207512;
export const UBLK_U_CMD_GET_FEATURES = 0x80207513;
export const UBLK_U_CMD_DEL_DEV_ASYNC = 0x80207514;

// IO commands on /dev/ublkcN.
export const UBLK_U_IO_FETCH_REQ = 0xc0107520;
export const UBLK_U_IO_COMMIT_AND_FETCH_REQ = 0xc0107521;
export const UBLK_U_IO_NEED_GET_DATA = 0xc0107522;

// CQE res of a fetch.
export const UBLK_IO_RES_OK = 0;
export const UBLK_IO_RES_NEED_GET_DATA = 1;
export const UBLK_IO_RES_ABORT = -19; // -ENODEV

// ublksrv_ctrl_dev_info.flags
export const UBLK_F_SUPPORT_ZERO_COPY = 1 << 0;
export const UBLK_F_URING_CMD_COMP_IN_TASK = 1 << 1;
export const UBLK_F_NEED_GET_DATA = 1 << 2;
export const UBLK_F_USER_RECOVERY = 1 << 3;
export const UBLK_F_USER_RECOVERY_REISSUE = 1 << 4;
export const UBLK_F_UNPRIVILEGED_DEV = 1 << 5;
export const UBLK_F_CMD_IOCTL_ENCODE = 1 << 6;
export const UBLK_F_USER_COPY = 1 << 7;
export const UBLK_F_ZONED = 1 << 8;

/** Feature names in bit order, as `ublk features` prints them (a later bit prints as `bitN`). */
export const UBLK_FEATURE_NAMES: readonly string[] = [
  'ZERO_COPY',
  'COMP_IN_TASK',
  'NEED_GET_DATA',
  'USER_RECOVERY',
  'USER_RECOVERY_REISSUE',
  'UNPRIVILEGED_DEV',
  'CMD_IOCTL_ENCODE',
  'USER_COPY',
  'ZONED',
  'USER_RECOVERY_FAIL_IO',
  'UPDATE_SIZE',
  'AUTO_BUF_REG',
  'QUIESCE',
  'PER_IO_DAEMON',
  'BUF_REG_OFF_DAEMON',
];

// ublksrv_ctrl_dev_info.state
export const UBLK_S_DEV_DEAD = 0;
export const UBLK_S_DEV_LIVE = 1;
export const UBLK_S_DEV_QUIESCED = 2;
export const UBLK_S_DEV_FAIL_IO = 3;

// ublk_params.types
export const UBLK_PARAM_TYPE_BASIC = 1 << 0;
export const UBLK_PARAM_TYPE_DISCARD = 1 << 1;
export const UBLK_PARAM_TYPE_DEVT = 1 << 2;
export const UBLK_PARAM_TYPE_ZONED = 1 << 3;

// ublk_param_basic.attrs
export const UBLK_ATTR_READ_ONLY = 1 << 0;
export const UBLK_ATTR_ROTATIONAL = 1 << 1;
export const UBLK_ATTR_VOLATILE_CACHE = 1 << 2;
export const UBLK_ATTR_FUA = 1 << 3;

// ublksrv_io_desc.op_flags (UBLK_IO_OP_*, UBLK_IO_F_*): defined below target/, where targets read them.
export * from '../sys/ublk/io.js';

// Limits.
export const UBLK_MAX_QUEUE_DEPTH = 4096;
export const UBLK_MAX_NR_QUEUES = 4096;
/** Per-queue stride of the descriptor mmap: round_up(UBLK_MAX_QUEUE_DEPTH * sizeof(ublksrv_io_desc), PAGE_SIZE). */
export const UBLKSRV_CMD_BUF_OFFSET = 0;
export const UBLK_MAX_QUEUE_DESC_BYTES = UBLK_MAX_QUEUE_DEPTH * 24;

/** struct ublksrv_ctrl_cmd (32 bytes): the payload of a control uring_cmd. */
export const ublksrv_ctrl_cmd = {
  SIZE: 32,
  dev_id: 0, // u32
  queue_id: 4, // u16
  len: 6, // u16
  addr: 8, // u64
  data: 16, // u64 (data[1])
  dev_path_len: 24, // u16
  pad: 26, // u16
  reserved: 28, // u32
} as const;

/** struct ublksrv_ctrl_dev_info (64 bytes). */
export const ublksrv_ctrl_dev_info = {
  SIZE: 64,
  nr_hw_queues: 0, // u16
  queue_depth: 2, // u16
  state: 4, // u16
  pad0: 6, // u16
  max_io_buf_bytes: 8, // u32
  dev_id: 12, // u32
  ublksrv_pid: 16, // i32
  pad1: 20, // u32
  flags: 24, // u64
  ublksrv_flags: 32, // u64
  owner_uid: 40, // u32
  owner_gid: 44, // u32
  reserved1: 48, // u64
  reserved2: 56, // u64
} as const;

/** struct ublk_params (112 bytes) and its parts. */
export const ublk_params = {
  SIZE: 112,
  len: 0, // u32
  types: 4, // u32
  basic: 8,
  discard: 40,
  devt: 60,
  zoned: 76,
} as const;

/** struct ublk_param_basic (32 bytes). */
export const ublk_param_basic = {
  SIZE: 32,
  attrs: 0, // u32
  logical_bs_shift: 4, // u8
  physical_bs_shift: 5, // u8
  io_opt_shift: 6, // u8
  io_min_shift: 7, // u8
  max_sectors: 8, // u32
  chunk_sectors: 12, // u32
  dev_sectors: 16, // u64
  virt_boundary_mask: 24, // u64
} as const;

/** struct ublk_param_discard (20 bytes). */
export const ublk_param_discard = {
  SIZE: 20,
  discard_alignment: 0, // u32
  discard_granularity: 4, // u32
  max_discard_sectors: 8, // u32
  max_write_zeroes_sectors: 12, // u32
  max_discard_segments: 16, // u16
  reserved0: 18, // u16
} as const;

/** struct ublk_param_devt (16 bytes), filled by the kernel. */
export const ublk_param_devt = {
  SIZE: 16,
  char_major: 0,
  char_minor: 4,
  disk_major: 8,
  disk_minor: 12,
} as const;

/** struct ublksrv_io_desc (24 bytes): one per tag in the queue's read-only mmap. */
export const ublksrv_io_desc = {
  SIZE: 24,
  op_flags: 0, // u32
  nr_sectors: 4, // u32 (nr_zones for REPORT_ZONES)
  start_sector: 8, // u64
  addr: 16, // u64
} as const;

/** struct ublksrv_io_cmd (16 bytes): the payload of FETCH / COMMIT_AND_FETCH. */
export const ublksrv_io_cmd = {
  SIZE: 16,
  q_id: 0, // u16
  tag: 2, // u16
  result: 4, // i32
  addr: 8, // u64
} as const;

/*
 * Reading ublksrv_io_desc[tag] in place, from a u32 view of the queue's
 * descriptor mapping (6 words per tag). Small enough for V8 to inline on
 * the IO path; sectors are 512 bytes whatever the logical block size.
 */
export function iodOp(desc: Uint32Array, tag: number): number {
  return desc[tag * 6] & 0xff;
}
/** UBLK_IO_F_* bits of op_flags. */
export function iodFlags(desc: Uint32Array, tag: number): number {
  return desc[tag * 6] & ~0xff;
}
export function iodLength(desc: Uint32Array, tag: number): number {
  return desc[tag * 6 + 1] * 512;
}
/** start_sector (u64) in bytes; exact below 2^53. */
export function iodOffset(desc: Uint32Array, tag: number): number {
  return (desc[tag * 6 + 2] + desc[tag * 6 + 3] * 0x100000000) * 512;
}

/** The mmap offset of queue q's descriptors on /dev/ublkcN. */
export function descOffset(q: number, pageSize = 4096): number {
  return UBLKSRV_CMD_BUF_OFFSET + q * Math.ceil(UBLK_MAX_QUEUE_DESC_BYTES / pageSize) * pageSize;
}
