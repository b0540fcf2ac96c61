// Pins the io_uring structs to include/uapi/linux/io_uring.h.
import t from 'tap';
import * as L from '../../sys/uring/layout.js';
import * as C from '../../sys/uring/constants.js';
import * as UD from '../../sys/uring/user-data.js';

t.test('io_uring_params is 120 bytes with sq_off @40 and cq_off @80', async (t) => {
  t.equal(L.io_uring_params.SIZE, 120);
  t.equal(L.io_uring_params.sq_off, 40);
  t.equal(L.io_uring_params.cq_off, 80);
  t.equal(L.io_uring_params.cq_off - L.io_uring_params.sq_off, L.io_sqring_offsets.SIZE);
  t.equal(L.io_uring_params.SIZE - L.io_uring_params.cq_off, L.io_cqring_offsets.SIZE);
  t.same([L.io_sqring_offsets.head, L.io_sqring_offsets.tail, L.io_sqring_offsets.array, L.io_sqring_offsets.user_addr], [0, 4, 24, 32]);
  t.same([L.io_cqring_offsets.cqes, L.io_cqring_offsets.flags, L.io_cqring_offsets.user_addr], [20, 24, 32]);
});

t.test('io_uring_sqe is 64 bytes (128 with SQE128) with cmd[] at 48', async (t) => {
  const S = L.io_uring_sqe;
  t.same([S.SIZE, S.SIZE128], [64, 128]);
  t.same([S.opcode, S.flags, S.ioprio, S.fd, S.off, S.addr, S.len, S.rw_flags, S.user_data, S.buf_index, S.personality, S.file_index, S.cmd], [0, 1, 2, 4, 8, 16, 24, 28, 32, 40, 42, 44, 48]);
  t.same([L.io_uring_cqe.SIZE, L.io_uring_cqe.SIZE32, L.io_uring_cqe.res, L.io_uring_cqe.flags], [16, 32, 8, 12]);
});

t.test('opcodes and flags match the header', async (t) => {
  t.same(
    [C.IORING_OP_NOP, C.IORING_OP_FSYNC, C.IORING_OP_POLL_ADD, C.IORING_OP_POLL_REMOVE, C.IORING_OP_SENDMSG, C.IORING_OP_TIMEOUT, C.IORING_OP_FALLOCATE, C.IORING_OP_READ, C.IORING_OP_WRITE, C.IORING_OP_RECV, C.IORING_OP_MSG_RING, C.IORING_OP_URING_CMD],
    [0, 3, 6, 7, 9, 11, 17, 22, 23, 27, 40, 46],
  );
  t.same([C.IOSQE_ASYNC, C.IOSQE_CQE_SKIP_SUCCESS, C.IORING_MSG_DATA], [16, 64, 0]);
  t.same([C.IORING_SETUP_COOP_TASKRUN, C.IORING_SETUP_TASKRUN_FLAG, C.IORING_SETUP_SQE128, C.IORING_SETUP_CQE32], [256, 512, 1024, 2048]);
  t.same([C.IORING_OFF_SQ_RING, C.IORING_OFF_CQ_RING, C.IORING_OFF_SQES], [0, 0x8000000, 0x10000000]);
  t.equal(C.IORING_SQ_TASKRUN, 4);
  t.same([C.IORING_POLL_ADD_MULTI, C.IORING_CQE_F_MORE, C.POLLIN], [1, 2, 1]);
  t.same([C.IORING_REGISTER_FILES, C.IOSQE_FIXED_FILE], [2, 1]);
});

t.test('user_data: the owner in the top two bits of the high word, its kind below, both read back', async (t) => {
  t.same([UD.USER_DATA_IO_CMD, UD.USER_DATA_INTERNAL, UD.USER_DATA_TARGET], [0, 0x40000000, 0x80000000]);
  for (const owner of [UD.USER_DATA_IO_CMD, UD.USER_DATA_INTERNAL, UD.USER_DATA_TARGET]) {
    for (const kind of [0, 1, 0x3fffffff]) {
      const hi = UD.userDataHi(owner, kind);
      t.ok(hi >= 0 && hi <= 0xffffffff, 'a u32');
      t.same([UD.userDataOwner(hi), UD.userDataKind(hi)], [owner, kind]);
    }
  }
  t.equal(UD.userDataHi(UD.USER_DATA_TARGET, 1), 0x80000001, 'TARGET_USER_DATA | kind, as targets write it');
});
