/**
 * ublk_drv played on the host, for dispatcher tests without the VM: a
 * descriptor array in JS memory, and IO commands that never reach a char
 * device. A request is "delivered" by filling ublksrv_io_desc[tag] and
 * posting the CQE the kernel would post (user_data = the tag's IO command,
 * res UBLK_IO_RES_OK) on the queue's ring with IORING_OP_MSG_RING from the
 * fake's own ring; an abort posts UBLK_IO_RES_ABORT the same way. The
 * dispatcher's FETCH and COMMIT_AND_FETCH SQEs become NOPs that post no
 * CQE (IOSQE_CQE_SKIP_SUCCESS); the fake records what they carried.
 */
import { IOSQE_CQE_SKIP_SUCCESS } from '../../sys/uring/constants.js';
import { prepMsgRing, prepNop, sqeSetFlags } from '../../sys/uring/prep.js';
import { IoUring } from '../../sys/uring/ring.js';
import { USER_DATA_IO_CMD } from '../../sys/uring/user-data.js';
import type { QueueKernel } from '../../ublk/queue.js';
import * as U from '../../ublk/uapi.js';

export interface Commit {
  tag: number;
  result: number;
}

export interface FakeRequest {
  op: number;
  flags?: number;
  /** Bytes (a multiple of 512). */
  offset: number;
  length: number;
}

export class FakeUblk implements QueueKernel {
  readonly desc: Uint32Array;
  /** Every COMMIT_AND_FETCH_REQ, in order. */
  readonly commits: Commit[] = [];
  /** Tags whose fetch (or commit-and-fetch) is with the "kernel". */
  readonly fetched = new Set<number>();
  /** Called after each commit, as a test's script of what the kernel does next. */
  onCommit: (c: Commit) => void = () => undefined;
  /** After abortAll(), as after STOP_DEV: every new fetch is answered with an abort. */
  private aborting = false;
  private readonly own = new IoUring(64);
  private queueRingFd = -1;

  constructor(readonly depth: number) {
    this.desc = new Uint32Array(depth * 6);
  }

  /** The factory UblkQueue's constructor takes. */
  readonly attach = (ring: IoUring): QueueKernel => {
    this.queueRingFd = ring.fd;
    return this;
  };

  prepIoCmd(ring: IoUring, sqe: number, cmdOp: number, tag: number, result: number): void {
    prepNop(ring, sqe);
    sqeSetFlags(ring, sqe, IOSQE_CQE_SKIP_SUCCESS);
    if (this.fetched.has(tag)) throw new Error(`fake ublk: tag ${tag} fetched twice`);
    this.fetched.add(tag);
    if (cmdOp === U.UBLK_U_IO_COMMIT_AND_FETCH_REQ) {
      const c = { tag, result };
      this.commits.push(c);
      if (this.aborting) this.abortAll();
      else this.onCommit(c);
    } else if (cmdOp !== U.UBLK_U_IO_FETCH_REQ) {
      throw new Error(`fake ublk: unexpected IO command 0x${cmdOp.toString(16)}`);
    }
  }

  /** Hands request `r` to the queue in `tag`, which must have a fetch outstanding. */
  request(tag: number, r: FakeRequest): void {
    if (!this.fetched.delete(tag)) throw new Error(`fake ublk: tag ${tag} has no fetch outstanding`);
    const d = this.desc;
    const sector = r.offset / 512;
    d[tag * 6] = (r.op & 0xff) | (r.flags ?? 0);
    d[tag * 6 + 1] = r.length / 512;
    d[tag * 6 + 2] = sector >>> 0;
    d[tag * 6 + 3] = Math.floor(sector / 2 ** 32);
    this.post(tag, U.UBLK_IO_RES_OK);
  }

  /** UBLK_IO_RES_ABORT for every tag with a fetch outstanding, as STOP_DEV does. */
  abortAll(): void {
    this.aborting = true;
    for (const tag of [...this.fetched]) {
      this.fetched.delete(tag);
      this.post(tag, U.UBLK_IO_RES_ABORT);
    }
  }

  private post(tag: number, res: number): void {
    const sqe = this.own.getSqe();
    prepMsgRing(this.own, sqe, this.queueRingFd, res, tag, USER_DATA_IO_CMD);
    sqeSetFlags(this.own, sqe, IOSQE_CQE_SKIP_SUCCESS);
    const r = this.own.submit();
    if (r !== 1) throw new Error(`fake ublk: MSG_RING submit returned ${r}`);
    const n = this.own.cqReady();
    if (n > 0) {
      const err = this.own.cqeRes(0);
      this.own.cqAdvance(n);
      throw new Error(`fake ublk: MSG_RING failed with ${err}`);
    }
  }

  close(): void {
    this.own.close();
  }
}
