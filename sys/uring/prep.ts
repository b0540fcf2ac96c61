/**
 * SQE builders in the manner of liburing's io_uring_prep_*: each fills one
 * SQE (an index from IoUring.getSqe(), already zeroed) and does nothing else.
 * 64-bit fields are written as two u32 halves so numbers never become BigInt.
 */
import type { IoUring } from './ring.js';
import {
  IORING_OP_FALLOCATE,
  IORING_OP_FSYNC,
  IORING_MSG_DATA,
  IORING_OP_MSG_RING,
  IORING_OP_NOP,
  IORING_OP_POLL_ADD,
  IORING_OP_POLL_REMOVE,
  IORING_POLL_ADD_MULTI,
  IORING_OP_READ,
  IORING_OP_RECV,
  IORING_OP_SENDMSG,
  IORING_OP_TIMEOUT,
  IORING_OP_URING_CMD,
  IORING_OP_WRITE,
} from './constants.js';
import { io_uring_sqe as S } from './layout.js';

const TWO32 = 0x100000000;

/** Writes a non-negative (or -1) integer below 2^53 as a little-endian u64 at u32 index w. */
export function putU64(u32: Uint32Array, w: number, v: number): void {
  u32[w] = v >>> 0;
  u32[w + 1] = Math.floor(v / TWO32) >>> 0;
}

function prepRw(ring: IoUring, sqe: number, op: number, fd: number, addr: number, len: number, off: number): number {
  const w = sqe * ring.sqeWords;
  const u32 = ring.sqe32;
  ring.sqe8[w << 2] = op;
  u32[w + (S.fd >> 2)] = fd;
  putU64(u32, w + (S.off >> 2), off);
  putU64(u32, w + (S.addr >> 2), addr);
  u32[w + (S.len >> 2)] = len;
  return w;
}

/** sqe.user_data = hi:lo. */
export function sqeSetData(ring: IoUring, sqe: number, lo: number, hi: number): void {
  const w = sqe * ring.sqeWords + (S.user_data >> 2);
  ring.sqe32[w] = lo;
  ring.sqe32[w + 1] = hi;
}

/** sqe.flags (IOSQE_*). */
export function sqeSetFlags(ring: IoUring, sqe: number, flags: number): void {
  ring.sqe8[sqe * ring.sqeSize + S.flags] = flags;
}

export function prepNop(ring: IoUring, sqe: number): void {
  prepRw(ring, sqe, IORING_OP_NOP, -1, 0, 0, 0);
}

export function prepRead(ring: IoUring, sqe: number, fd: number, addr: number, len: number, offset: number): void {
  prepRw(ring, sqe, IORING_OP_READ, fd, addr, len, offset);
}

/** rwFlags: RWF_* (RWF_DSYNC for a FUA write). */
export function prepWrite(ring: IoUring, sqe: number, fd: number, addr: number, len: number, offset: number, rwFlags = 0): void {
  const w = prepRw(ring, sqe, IORING_OP_WRITE, fd, addr, len, offset);
  ring.sqe32[w + (S.rw_flags >> 2)] = rwFlags;
}

/** fsyncFlags: IORING_FSYNC_DATASYNC for fdatasync. */
export function prepFsync(ring: IoUring, sqe: number, fd: number, fsyncFlags = 0): void {
  const w = prepRw(ring, sqe, IORING_OP_FSYNC, fd, 0, 0, 0);
  ring.sqe32[w + (S.rw_flags >> 2)] = fsyncFlags;
}

/** fallocate(fd, mode, offset, len): liburing puts len in addr and mode in len. */
export function prepFallocate(ring: IoUring, sqe: number, fd: number, mode: number, offset: number, len: number): void {
  prepRw(ring, sqe, IORING_OP_FALLOCATE, fd, len, mode, offset);
}

/** sendmsg(fd, msghdr at `msg`, msgFlags), as io_uring_prep_sendmsg(). With MSG_WAITALL on a stream socket the kernel sends it all or fails. */
export function prepSendmsg(ring: IoUring, sqe: number, fd: number, msg: number, msgFlags: number): void {
  const w = prepRw(ring, sqe, IORING_OP_SENDMSG, fd, msg, 1, 0);
  ring.sqe32[w + (S.rw_flags >> 2)] = msgFlags;
}

/** recv(fd, addr, len, msgFlags), as io_uring_prep_recv(). */
export function prepRecv(ring: IoUring, sqe: number, fd: number, addr: number, len: number, msgFlags: number): void {
  const w = prepRw(ring, sqe, IORING_OP_RECV, fd, addr, len, 0);
  ring.sqe32[w + (S.rw_flags >> 2)] = msgFlags;
}

/**
 * A relative timeout (the struct __kernel_timespec at `ts`, read when the
 * SQE is issued): completes with -ETIME once it has passed, as
 * io_uring_prep_timeout(ts, 0, 0).
 */
export function prepTimeout(ring: IoUring, sqe: number, ts: number): void {
  prepRw(ring, sqe, IORING_OP_TIMEOUT, -1, ts, 1, 0);
}

/** Poll for `events` (POLLIN …) on fd; one-shot unless pollFlags (the SQE's len) has IORING_POLL_ADD_MULTI. */
export function prepPollAdd(ring: IoUring, sqe: number, fd: number, events: number, pollFlags = 0): void {
  const w = prepRw(ring, sqe, IORING_OP_POLL_ADD, fd, 0, pollFlags, 0);
  ring.sqe32[w + (S.rw_flags >> 2)] = events;
}

/**
 * Multishot poll (IORING_POLL_ADD_MULTI): one CQE with IORING_CQE_F_MORE
 * per wake-up of fd's wait queue for `events`, edge-triggered (the kernel
 * adds EPOLLET unless IORING_POLL_ADD_LEVEL), until a CQE without F_MORE
 * says it ended (CQ overflow, cancellation) and must be armed again.
 */
export function prepPollMultishot(ring: IoUring, sqe: number, fd: number, events: number): void {
  prepPollAdd(ring, sqe, fd, events, IORING_POLL_ADD_MULTI);
}

/**
 * Ends the poll whose SQE had user_data hi:lo, as io_uring_prep_poll_remove():
 * that poll completes with -ECANCELED, this SQE with 0 or -ENOENT (it had
 * ended already).
 */
export function prepPollRemove(ring: IoUring, sqe: number, lo: number, hi: number): void {
  const w = prepRw(ring, sqe, IORING_OP_POLL_REMOVE, -1, 0, 0, 0);
  ring.sqe32[w + (S.addr >> 2)] = lo;
  ring.sqe32[w + (S.addr >> 2) + 1] = hi;
}

/**
 * IORING_OP_MSG_RING (IORING_MSG_DATA): posts a CQE with user_data hi:lo
 * and `res` on the ring `ringFd`, as liburing's io_uring_prep_msg_ring().
 */
export function prepMsgRing(ring: IoUring, sqe: number, ringFd: number, res: number, lo: number, hi: number): void {
  const w = prepRw(ring, sqe, IORING_OP_MSG_RING, ringFd, IORING_MSG_DATA, res >>> 0, 0);
  ring.sqe32[w + (S.off >> 2)] = lo; // the target CQE's user_data
  ring.sqe32[w + (S.off >> 2) + 1] = hi;
}

/**
 * IORING_OP_URING_CMD with sqe.cmd_op; returns the u32 index of sqe.cmd[]
 * (16 bytes in a 64-byte SQE, 80 with SQE128) for the caller's payload.
 */
export function prepUringCmd(ring: IoUring, sqe: number, fd: number, cmdOp: number): number {
  const w = prepRw(ring, sqe, IORING_OP_URING_CMD, fd, 0, 0, 0);
  ring.sqe32[w + (S.off >> 2)] = cmdOp;
  return w + (S.cmd >> 2);
}
