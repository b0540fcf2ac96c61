/**
 * The part of the ublk UAPI (include/uapi/linux/ublk_cmd.h, Linux 6.12) that a
 * target speaks: the op and flag bits of ublksrv_io_desc.op_flags. They live
 * here, below target/, so that targets never import the ublk protocol layer;
 * ublk/uapi.ts re-exports them beside the rest of the header.
 */

// ublksrv_io_desc.op_flags: op in bits 0..7, flags above.
export const UBLK_IO_OP_READ = 0;
export const UBLK_IO_OP_WRITE = 1;
export const UBLK_IO_OP_FLUSH = 2;
export const UBLK_IO_OP_DISCARD = 3;
export const UBLK_IO_OP_WRITE_SAME = 4;
export const UBLK_IO_OP_WRITE_ZEROES = 5;
export const UBLK_IO_F_FAILFAST_DEV = 1 << 8;
export const UBLK_IO_F_FAILFAST_TRANSPORT = 1 << 9;
export const UBLK_IO_F_FAILFAST_DRIVER = 1 << 10;
export const UBLK_IO_F_META = 1 << 11;
export const UBLK_IO_F_FUA = 1 << 13;
export const UBLK_IO_F_NOUNMAP = 1 << 15;
export const UBLK_IO_F_SWAP = 1 << 16;
