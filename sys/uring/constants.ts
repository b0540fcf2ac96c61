/** Numbers from include/uapi/linux/io_uring.h (Linux 6.12). */

// io_uring_setup() flags
export const IORING_SETUP_IOPOLL = 1 << 0;
export const IORING_SETUP_SQPOLL = 1 << 1;
export const IORING_SETUP_CQSIZE = 1 << 3;
export const IORING_SETUP_CLAMP = 1 << 4;
export const IORING_SETUP_COOP_TASKRUN = 1 << 8;
export const IORING_SETUP_TASKRUN_FLAG = 1 << 9;
export const IORING_SETUP_SQE128 = 1 << 10;
export const IORING_SETUP_CQE32 = 1 << 11;
export const IORING_SETUP_SINGLE_ISSUER = 1 << 12;
export const IORING_SETUP_DEFER_TASKRUN = 1 << 13;

// io_uring_params.features
export const IORING_FEAT_SINGLE_MMAP = 1 << 0;
export const IORING_FEAT_NODROP = 1 << 1;

// sq_ring.flags
export const IORING_SQ_NEED_WAKEUP = 1 << 0;
export const IORING_SQ_CQ_OVERFLOW = 1 << 1;
export const IORING_SQ_TASKRUN = 1 << 2;

// io_uring_enter() flags
export const IORING_ENTER_GETEVENTS = 1 << 0;
export const IORING_ENTER_SQ_WAKEUP = 1 << 1;

// mmap offsets
export const IORING_OFF_SQ_RING = 0;
export const IORING_OFF_CQ_RING = 0x8000000;
export const IORING_OFF_SQES = 0x10000000;

// sqe.flags
export const IOSQE_FIXED_FILE = 1 << 0;
export const IOSQE_IO_DRAIN = 1 << 1;
export const IOSQE_IO_LINK = 1 << 2;
export const IOSQE_ASYNC = 1 << 4;
export const IOSQE_CQE_SKIP_SUCCESS = 1 << 6;

// sqe.opcode
export const IORING_OP_NOP = 0;
export const IORING_OP_READV = 1;
export const IORING_OP_WRITEV = 2;
export const IORING_OP_FSYNC = 3;
export const IORING_OP_READ_FIXED = 4;
export const IORING_OP_WRITE_FIXED = 5;
export const IORING_OP_POLL_ADD = 6;
export const IORING_OP_POLL_REMOVE = 7;
export const IORING_OP_SENDMSG = 9;
export const IORING_OP_TIMEOUT = 11;
export const IORING_OP_FALLOCATE = 17;
export const IORING_OP_READ = 22;
export const IORING_OP_WRITE = 23;
export const IORING_OP_RECV = 27;
export const IORING_OP_MSG_RING = 40;
export const IORING_OP_URING_CMD = 46;

// sqe.addr of IORING_OP_MSG_RING
export const IORING_MSG_DATA = 0;

// sqe.fsync_flags
export const IORING_FSYNC_DATASYNC = 1 << 0;

// io_uring_register() opcodes
export const IORING_REGISTER_FILES = 2;
export const IORING_REGISTER_EVENTFD = 4;
export const IORING_UNREGISTER_EVENTFD = 5;

// poll(2) events, for IORING_OP_POLL_ADD
export const POLLIN = 0x0001;

// sqe.len of IORING_OP_POLL_ADD
export const IORING_POLL_ADD_MULTI = 1 << 0;

// cqe.flags
export const IORING_CQE_F_MORE = 1 << 1;
