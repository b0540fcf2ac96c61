/**
 * One queue of the nbd target, in the queue's worker thread: one NBD
 * connection whose sends and receives are SQEs on the queue's io_uring,
 * beside the ublk commands, as in ublksrv's nbd target.
 *
 * Sends: the requests queued in a turn go out in one SENDMSG (a header per
 * request, and a write's data straight from its tag buffer), and only one
 * SENDMSG is in flight at a time, so two batches never interleave on the
 * stream. MSG_WAITALL makes io_uring send all of it or fail.
 *
 * Receives: one RECV is always armed while connected. Replies (simple, or
 * structured chunks when the server offered them) are parsed out of a
 * staging buffer (the queue's scratch area), so one RECV brings many small
 * replies; a large read payload that has not arrived yet is received
 * straight into its tag buffer instead. While a large read waits for its
 * reply, the staging RECV takes no more than a reply's header, so that its
 * payload is not received into staging and copied again. After each RECV,
 * what the socket holds already is taken with non-blocking recv(2) calls,
 * not one more RECV and turn per header and per payload. A reply's data is
 * copied out of staging with ctx.copyFromScratch(): nothing is allocated
 * per request.
 *
 * When the connection fails (the server closed it, a send or receive
 * failed, or no reply came for `timeoutMs` while requests waited), the
 * requests it carried fail with EIO and so does every later one; with
 * `reconnect` they are held instead and sent again once a new connection
 * (tried with back-off, 0.5 s doubling to 10 s) has done the handshake.
 */
import * as native from '../../sys/native.js';
import { NativeMemory } from '../../sys/memory.js';
import { type StreamAddress, MSG_DONTWAIT, MSG_NOSIGNAL, MSG_WAITALL, UIO_MAXIOV, connectStream, setTimeouts, shutdownStream, struct_iovec, struct_msghdr, sendAll } from '../../sys/socket.js';
import { kernel_timespec } from '../../sys/uring/layout.js';
import { prepRecv, prepSendmsg, prepTimeout, putU64, sqeSetData } from '../../sys/uring/prep.js';
import { USER_DATA_TARGET, userDataHi } from '../../sys/uring/user-data.js';
import { UBLK_IO_F_FUA, UBLK_IO_F_NOUNMAP, UBLK_IO_OP_DISCARD, UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE, UBLK_IO_OP_WRITE_ZEROES } from '../../sys/ublk/io.js';
import { SCRATCH_BYTES, type QueueContext, type TargetQueue } from '../target.js';
import {
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_IS_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_SIZE,
  NBD_STRUCTURED_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_SIZE,
  handshake,
  nbdErrno,
  request,
} from './protocol.js';
import { EAGAIN, EBADF, EIO, EOPNOTSUPP } from '../../sys/errno.js';


/** What every queue gets from the daemon's open() (see index.ts). */
export interface NbdQueueData {
  to: StreamAddress;
  /** The URI, for messages. */
  uri: string;
  exportName: string;
  /** What the probe at `ublk add` found: a reconnect must find the same size. */
  size: number;
  flags: number;
  readOnly: boolean;
  /** Fail requests that got no reply for this long (a server that hangs). */
  timeoutMs: number;
  /** Hold IO and reconnect when the connection fails, instead of failing it. */
  reconnect: boolean;
}

/** The counters of one connection (statsBuffer, a Float64Array), read by index.ts. */
export const NS = { sentBytes: 0, receivedBytes: 1, reconnects: 2, state: 3, SIZE: 4 } as const;
/** NS.state values. */
export const CONN_UP = 0;
export const CONN_RECONNECTING = 1;
export const CONN_FAILED = 2;

/** Kinds of SQE on the queue ring (user_data high word); the low word is the connection's generation. */
const SEND = 0;
const RECV = 1;
const TICK = 2;
const RECONNECT = 3;
const SEND_HI = userDataHi(USER_DATA_TARGET, SEND);
const RECV_HI = userDataHi(USER_DATA_TARGET, RECV);
const TICK_HI = userDataHi(USER_DATA_TARGET, TICK);
const RECONNECT_HI = userDataHi(USER_DATA_TARGET, RECONNECT);

/** Tag states. */
const IDLE = 0;
const QUEUED = 1; // waiting to be sent
const SENT = 2; // waiting for its reply

/** Reply parser states. */
const P_HEADER = 0;
const P_META = 1; // a chunk's offset (and hole size, or error code)
const P_DATA = 2; // payload into the tag's buffer
const P_SKIP = 3; // payload nobody needs (an error chunk's message)

/** The staging buffer is the queue's scratch area (QueueContext.scratch). */
const STAGING = SCRATCH_BYTES;
/** A payload at least this long that has not arrived is received into its tag buffer directly. */
const DIRECT_MIN = 16 * 1024;
/** The most a reply's header takes before its payload: a structured data chunk's header and offset (20 + 8). */
const HEADER_PEEK = 28;
/** Non-blocking receives in a row, at most, before the rest is left to a RECV on the ring (recvNow()). */
const RECV_NOW_MAX = 16;
/** Separate pieces a read's reply may be in at once (chunks may come in any order; touching ones merge). */
const MAX_PIECES = 16;
/** Requests per SENDMSG: two iovecs each (header, write data). */
const MAX_BATCH = UIO_MAXIOV / 2;
const TICK_MS = 1000;
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 10_000;
/** How long a (re)connection and its handshake may take. */
export const CONNECT_TIMEOUT_MS = 5000;

export class NbdQueue implements TargetQueue {
  readonly statsBuffer: SharedArrayBuffer;
  private readonly stats: Float64Array;
  private readonly ctx: QueueContext;
  private readonly data: NbdQueueData;
  private readonly depth: number;
  private readonly fua: boolean;
  /** What this connection's handshake agreed (a reconnect may meet a different server). */
  private structured = false;

  /** Why the connection last failed. */
  lastError = '';
  private fd = -1;
  private state = CONN_UP;
  /** Bumped when a connection ends: CQEs of its SQEs (user_data low word) are then ignored. */
  private gen = 0;
  /** SQEs of ours on the ring, of any generation. */
  private sqes = 0;
  /** SENDs and RECVs of ended connections still on the ring (a reconnect waits for them). */
  private oldSqes = 0;
  /** TICKs on the ring, of any connection: nothing waits for them, they write nothing. */
  private ticks = 0;
  /**
   * The ended connection's socket, shut down but kept open until its SQEs
   * end: one prepared in the same turn is submitted after lost(), and on a
   * closed fd number another thread's new socket could be found there.
   */
  private oldFd = -1;
  private sending = false;
  private sendBytes = 0;
  private receiving = false;
  private ticking = false;
  private reconnectMs = RECONNECT_FIRST_MS;
  /** Receive completions with data; a tick that sees no change with requests out is idle time. */
  private progress = 0;
  private tickProgress = 0;
  private idleMs = 0;
  /** Requests sent or queued, not yet answered. */
  private outstanding = 0;
  /** Reads of DIRECT_MIN bytes or more sent and not answered: the staging RECV then takes only a header. */
  private bigReads = 0;

  // Native memory: per-tag request headers, the SENDMSG's iovecs and msghdr, timespecs.
  private readonly mem: NativeMemory;
  private readonly hdrAt: number;
  private readonly iovAt: number;
  private readonly msgAt: number;
  private readonly tickTs: number;
  private readonly backoffTs: number;
  private readonly stagingAt: number;
  private readonly view: DataView;
  private readonly u32: Uint32Array;
  /** The staging buffer (ctx.scratch), and a view of it to parse replies. */
  private readonly staging: Uint8Array;
  private readonly stagingView: DataView;

  // Per tag.
  private readonly tagState: Uint8Array;
  private readonly tagCmd: Uint8Array;
  private readonly tagOffset: Float64Array;
  private readonly tagLength: Uint32Array;
  /** The cookie's high word of the tag's request: counts the tag's requests. */
  private readonly tagSeq: Uint32Array;
  /** A structured reply's error so far (-errno, 0: none). */
  private readonly tagError: Int32Array;
  /**
   * The parts of a read its chunks have covered so far: tagPieces[tag]
   * disjoint ranges [pieceStart, pieceEnd) at tag * MAX_PIECES, relative
   * to the request; touching ranges are merged, so a read covered in full
   * is one piece.
   */
  private readonly tagPieces: Uint8Array;
  private readonly pieceStart: Float64Array;
  private readonly pieceEnd: Float64Array;

  /** Tags to send, in order (a ring of depth entries). */
  private readonly sendQ: Uint16Array;
  private sendHead = 0;
  private sendLen = 0;

  // The reply parser.
  private pState = P_HEADER;
  private pTag = 0;
  private pDst = 0;
  private pRemaining = 0;
  private pChunkType = 0;
  private pChunkFlags = 0;
  private pChunkLength = 0;
  /** The payload being received belongs to a simple reply (the read then completes with it). */
  private pSimple = false;
  /** Staging bytes [start, end) not parsed yet. */
  private start = 0;
  private end = 0;
  /** The next receive goes into a tag buffer, not the staging buffer (placeRecv()). */
  private direct = false;
  private rxAt = 0;
  private rxLen = 0;

  constructor(ctx: QueueContext, data: NbdQueueData) {
    this.ctx = ctx;
    this.data = data;
    this.depth = ctx.depth;
    this.statsBuffer = new SharedArrayBuffer(NS.SIZE * 8);
    this.stats = new Float64Array(this.statsBuffer);
    const depth = ctx.depth;
    const hdrBytes = depth * 32;
    const iovBytes = MAX_BATCH * 2 * struct_iovec.SIZE;
    this.hdrAt = 0;
    this.iovAt = hdrBytes;
    this.msgAt = this.iovAt + iovBytes;
    const tsAt = this.msgAt + 64;
    this.mem = NativeMemory.aligned(tsAt + 2 * kernel_timespec.SIZE, 64);
    this.tickTs = this.mem.addr + tsAt;
    this.backoffTs = this.tickTs + kernel_timespec.SIZE;
    this.view = new DataView(this.mem.buffer);
    this.u32 = new Uint32Array(this.mem.buffer);
    this.staging = ctx.scratch;
    this.stagingAt = ctx.scratchAddr;
    this.stagingView = new DataView(ctx.scratch.buffer, ctx.scratch.byteOffset, ctx.scratch.byteLength);
    for (let tag = 0; tag < depth; tag++) this.view.setUint32(tag * 32, NBD_REQUEST_MAGIC);
    // The SENDMSG's msghdr: always our iovec array, no name, no control; send() sets msg_iovlen.
    const m = this.msgAt >> 2;
    this.u32.fill(0, m, m + struct_msghdr.SIZE / 4);
    putU64(this.u32, m + struct_msghdr.msg_iov / 4, this.mem.addr + this.iovAt);
    this.setTimespec(this.tickTs, TICK_MS);
    this.tagState = new Uint8Array(depth);
    this.tagCmd = new Uint8Array(depth);
    this.tagOffset = new Float64Array(depth);
    this.tagLength = new Uint32Array(depth);
    this.tagSeq = new Uint32Array(depth);
    this.tagError = new Int32Array(depth);
    this.tagPieces = new Uint8Array(depth);
    this.pieceStart = new Float64Array(depth * MAX_PIECES);
    this.pieceEnd = new Float64Array(depth * MAX_PIECES);
    this.sendQ = new Uint16Array(depth);
    this.fua = (data.flags & NBD_FLAG_SEND_FUA) !== 0;
    try {
      this.connect();
    } catch (e) {
      this.mem.free();
      throw e;
    }
    this.armRecv();
  }

  /** A connection that has done the handshake, checked against what `ublk add` found; sets fd and what it agreed. */
  private connect(): void {
    const d = this.data;
    const fd = connectStream(d.to, CONNECT_TIMEOUT_MS);
    try {
      const info = handshake(fd, d.exportName, d.uri, true);
      if (info.size !== d.size) throw new Error(`${d.uri}: the export is ${info.size} bytes now, not ${d.size}`);
      if (!d.readOnly && info.flags & NBD_FLAG_READ_ONLY) throw new Error(`${d.uri}: the export is read-only now`);
      // The device promised the kernel what the first server did (a write cache, FUA, discard): the same server must keep it.
      const gone = d.flags & ~info.flags & (NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES);
      if (!d.readOnly && gone) throw new Error(`${d.uri}: the export no longer takes the commands it took (flags 0x${gone.toString(16)})`);
      setTimeouts(fd, 0); // from here on io_uring waits, and the ticks bound it
      this.fd = fd;
      this.structured = info.structured;
    } catch (e) {
      native.close(fd);
      throw e;
    }
  }

  queueIo(tag: number, op: number, flags: number, offset: number, length: number): number | undefined {
    let cmd: number;
    let cmdFlags = 0;
    switch (op) {
      case UBLK_IO_OP_READ:
        cmd = NBD_CMD_READ;
        break;
      case UBLK_IO_OP_WRITE:
        if (this.data.readOnly) return -EBADF;
        cmd = NBD_CMD_WRITE;
        if (flags & UBLK_IO_F_FUA && this.fua) cmdFlags = NBD_CMD_FLAG_FUA;
        break;
      case UBLK_IO_OP_FLUSH:
        cmd = NBD_CMD_FLUSH;
        length = 0;
        offset = 0;
        break;
      case UBLK_IO_OP_DISCARD:
        cmd = NBD_CMD_TRIM;
        break;
      case UBLK_IO_OP_WRITE_ZEROES:
        cmd = NBD_CMD_WRITE_ZEROES;
        // NOUNMAP: the range should stay allocated.
        if (flags & UBLK_IO_F_NOUNMAP) cmdFlags = NBD_CMD_FLAG_NO_HOLE;
        break;
      default:
        return -EOPNOTSUPP;
    }
    if (this.state === CONN_FAILED) return -EIO;
    this.tagCmd[tag] = cmd;
    this.tagOffset[tag] = offset;
    this.tagLength[tag] = length;
    // A new number per request on this tag, so that a stray reply to the tag's last request is not taken for this one's.
    const seq = (this.tagSeq[tag] + 1) >>> 0;
    this.tagSeq[tag] = seq;
    // The header: magic (set once), flags, type, cookie (sequence number, tag), offset, length; big-endian.
    const v = this.view;
    const h = this.hdrAt + tag * 32;
    v.setUint16(h + 4, cmdFlags);
    v.setUint16(h + 6, cmd);
    v.setUint32(h + 8, seq);
    v.setUint32(h + 12, tag);
    v.setUint32(h + 16, Math.floor(offset / 0x100000000));
    v.setUint32(h + 20, offset >>> 0);
    v.setUint32(h + 24, length);
    this.enqueue(tag);
    this.outstanding++;
    return undefined;
  }

  private enqueue(tag: number): void {
    this.tagState[tag] = QUEUED;
    this.sendQ[(this.sendHead + this.sendLen) % this.depth] = tag;
    this.sendLen++;
  }

  /** After a batch of requests: send what was queued, unless a send is still going. */
  flush(): void {
    if (this.state === CONN_UP && !this.sending && this.sendLen > 0) this.send();
  }

  /** One SENDMSG with every queued request (up to MAX_BATCH). */
  private send(): void {
    const u32 = this.u32;
    let iov = this.iovAt >> 2;
    let n = 0;
    let bytes = 0;
    const base = this.mem.addr;
    for (let i = 0; i < MAX_BATCH && this.sendLen > 0; i++) {
      const tag = this.sendQ[this.sendHead];
      this.sendHead = (this.sendHead + 1) % this.depth;
      this.sendLen--;
      this.tagState[tag] = SENT;
      if (this.isBigRead(tag)) this.bigReads++;
      // What a reply said so far counts per sending: a reconnect sends again from nothing.
      this.tagError[tag] = 0;
      this.tagPieces[tag] = 0;
      putU64(u32, iov, base + this.hdrAt + tag * 32);
      putU64(u32, iov + 2, NBD_REQUEST_SIZE);
      iov += 4;
      n++;
      bytes += NBD_REQUEST_SIZE;
      if (this.tagCmd[tag] === NBD_CMD_WRITE) {
        const len = this.tagLength[tag];
        putU64(u32, iov, this.ctx.bufferAddr(tag));
        putU64(u32, iov + 2, len);
        iov += 4;
        n++;
        bytes += len;
      }
    }
    // The msghdr's other fields were set once (constructor).
    putU64(u32, (this.msgAt + struct_msghdr.msg_iovlen) >> 2, n);
    const ring = this.ctx.ring;
    const sqe = this.ctx.getSqe();
    prepSendmsg(ring, sqe, this.fd, base + this.msgAt, MSG_WAITALL | MSG_NOSIGNAL);
    sqeSetData(ring, sqe, this.gen, SEND_HI);
    this.sqes++;
    this.sending = true;
    this.sendBytes = bytes;
    this.armTick();
  }

  /** The RECV that is always armed while connected: into the staging buffer, or a large payload's tag buffer. */
  private armRecv(): void {
    if (this.state !== CONN_UP || this.receiving) return;
    this.placeRecv();
    const ring = this.ctx.ring;
    const sqe = this.ctx.getSqe();
    prepRecv(ring, sqe, this.fd, this.rxAt, this.rxLen, this.direct ? MSG_WAITALL : 0);
    sqeSetData(ring, sqe, this.gen, RECV_HI);
    this.sqes++;
    this.receiving = true;
  }

  /** Where the next receive goes (rxAt, rxLen, direct): a large payload's tag buffer, or the staging buffer. */
  private placeRecv(): void {
    if (this.pState === P_DATA && this.start === this.end && this.pRemaining >= DIRECT_MIN) {
      this.direct = true;
      this.rxAt = this.ctx.bufferAddr(this.pTag) + this.pDst;
      this.rxLen = this.pRemaining;
      return;
    }
    this.direct = false;
    // Keep what is not parsed yet at the start: the longest thing parsed in one piece is 20 bytes.
    if (this.start === this.end) this.start = this.end = 0;
    else if (this.start > 0) {
      this.staging.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    // Not all of it (no MSG_WAITALL): a receive ends with whatever has arrived, a header cut short included.
    this.rxAt = this.stagingAt + this.end;
    this.rxLen = this.bigReads > 0 && (this.pState === P_HEADER || this.pState === P_META) ? Math.min(HEADER_PEEK, STAGING - this.end) : STAGING - this.end;
  }

  /** A tick every TICK_MS while requests are out: the bound on a server that stops answering. */
  private armTick(): void {
    if (this.ticking || this.data.timeoutMs <= 0) return;
    const ring = this.ctx.ring;
    const sqe = this.ctx.getSqe();
    prepTimeout(ring, sqe, this.tickTs);
    sqeSetData(ring, sqe, this.gen, TICK_HI);
    this.sqes++;
    this.ticks++;
    this.ticking = true;
    this.tickProgress = this.progress;
    this.idleMs = 0;
  }

  onCqe(lo: number, kind: number, res: number): void {
    this.sqes--;
    if (kind === TICK) {
      this.ticks--;
      // A tick of a connection that ended is no longer `ticking` (lost() said so): a new one may be.
      if (lo === this.gen) {
        this.ticking = false;
        this.onTick();
      }
      return;
    }
    if (kind === RECONNECT) {
      this.onReconnectTimer();
      return;
    }
    if (lo !== this.gen) {
      // Of a connection that ended.
      if (--this.oldSqes === 0) this.closeOldFd();
      return;
    }
    if (kind === SEND) {
      this.sending = false;
      if (res < 0) return this.lost(`send: ${native.strerror(-res)}`);
      this.stats[NS.sentBytes] += res;
      if (res < this.sendBytes) return this.lost(`sent ${res} of ${this.sendBytes} bytes`);
      if (this.sendLen > 0) this.send();
      return;
    }
    // RECV
    this.receiving = false;
    if (res <= 0) return this.recvFailed(res);
    if (!this.received(res)) return; // lost() said why
    if (!this.recvNow()) return;
    this.armRecv();
  }

  /** A receive brought `res` bytes where placeRecv() said; false when the connection was lost. */
  private received(res: number): boolean {
    this.progress++;
    this.stats[NS.receivedBytes] += res;
    if (this.direct) {
      this.pDst += res;
      this.pRemaining -= res;
      if (this.pRemaining === 0) this.payloadDone();
    } else this.end += res;
    return this.parse();
  }

  /**
   * While replies are due, what the socket holds already is received now
   * with non-blocking recv(2) calls, where placeRecv() says (a large
   * read's header, then its payload straight into the tag buffer), instead
   * of by RECVs on the ring: each of those takes one io_uring_enter and
   * turn, and a large read's reply needs two. The requests answered
   * complete in this turn (ublksrv's nbd target receives the same way).
   * What has not arrived is left to armRecv(). False when the connection
   * was lost.
   */
  private recvNow(): boolean {
    for (let i = 0; i < RECV_NOW_MAX && this.outstanding > 0; i++) {
      this.placeRecv();
      const res = native.recvAt(this.fd, this.rxAt, this.rxLen, MSG_DONTWAIT);
      if (res === -EAGAIN) return true;
      if (res <= 0) {
        this.recvFailed(res);
        return false;
      }
      if (!this.received(res)) return false;
    }
    return true;
  }

  private recvFailed(res: number): void {
    this.lost(res === 0 ? 'the server closed the connection' : `recv: ${native.strerror(-res)}`);
  }

  private onTick(): void {
    if (this.state !== CONN_UP || this.outstanding === 0) return;
    if (this.progress !== this.tickProgress) {
      this.tickProgress = this.progress;
      this.idleMs = 0;
    } else if ((this.idleMs += TICK_MS) >= this.data.timeoutMs) {
      return this.lost(`no reply from the server for ${this.idleMs / 1000} s`);
    }
    const ring = this.ctx.ring;
    const sqe = this.ctx.getSqe();
    prepTimeout(ring, sqe, this.tickTs);
    sqeSetData(ring, sqe, this.gen, TICK_HI);
    this.sqes++;
    this.ticks++;
    this.ticking = true;
  }

  /** Parses what the staging buffer holds; false when the server broke the protocol (the connection is then lost). */
  private parse(): boolean {
    const v = this.stagingView;
    for (;;) {
      const avail = this.end - this.start;
      const at = this.start;
      switch (this.pState) {
        case P_HEADER: {
          if (avail < 4) return true;
          const magic = v.getUint32(at);
          if (magic === NBD_SIMPLE_REPLY_MAGIC) {
            if (avail < NBD_SIMPLE_REPLY_SIZE) return true;
            const tag = this.replyTag(v.getUint32(at + 8), v.getUint32(at + 12));
            if (tag < 0) return false;
            const error = v.getUint32(at + 4);
            this.start += NBD_SIMPLE_REPLY_SIZE;
            const cmd = this.tagCmd[tag];
            if (cmd === NBD_CMD_READ && error === 0) {
              if (this.structured) return this.protocolError(`a simple reply to a read (tag ${tag}) after structured replies were agreed`);
              this.pSimple = true;
              this.startPayload(tag, 0, this.tagLength[tag]);
            } else {
              this.finish(tag, error !== 0 ? -nbdErrno(error) : cmd === NBD_CMD_READ || cmd === NBD_CMD_WRITE ? this.tagLength[tag] : 0);
            }
          } else if (magic === NBD_STRUCTURED_REPLY_MAGIC && this.structured) {
            if (avail < NBD_STRUCTURED_REPLY_SIZE) return true;
            const tag = this.replyTag(v.getUint32(at + 8), v.getUint32(at + 12));
            if (tag < 0) return false;
            this.pTag = tag;
            this.pSimple = false;
            this.pChunkFlags = v.getUint16(at + 4);
            this.pChunkType = v.getUint16(at + 6);
            this.pChunkLength = v.getUint32(at + 16);
            this.start += NBD_STRUCTURED_REPLY_SIZE;
            if (!this.chunkHeader()) return false;
          } else {
            return this.protocolError(`a reply with magic 0x${magic.toString(16)}`);
          }
          break;
        }
        case P_META: {
          const need = this.metaLength();
          if (avail < need) return true;
          const tag = this.pTag;
          this.start += need;
          if (this.pChunkType & NBD_REPLY_TYPE_IS_ERROR) {
            const error = v.getUint32(at);
            this.tagError[tag] = -nbdErrno(error === 0 ? EIO : error);
            this.pState = P_SKIP;
            this.pRemaining = this.pChunkLength - need;
            break;
          }
          const rel = v.getUint32(at) * 0x100000000 + v.getUint32(at + 4) - this.tagOffset[tag];
          const length = this.pChunkType === NBD_REPLY_TYPE_OFFSET_DATA ? this.pChunkLength - 8 : v.getUint32(at + 8);
          if (length === 0 || rel < 0 || rel + length > this.tagLength[tag]) return this.protocolError(`a read chunk that is empty or outside its request (tag ${tag})`);
          if (!this.cover(tag, rel, length)) return false;
          if (this.pChunkType === NBD_REPLY_TYPE_OFFSET_DATA) this.startPayload(tag, rel, length);
          else {
            this.ctx.buffer(tag).fill(0, rel, rel + length); // a hole reads as zeros
            this.chunkDone();
          }
          break;
        }
        case P_DATA: {
          const n = Math.min(avail, this.pRemaining);
          if (n === 0) return true;
          this.ctx.copyFromScratch(this.pTag, this.pDst, this.start, n);
          this.start += n;
          this.pDst += n;
          this.pRemaining -= n;
          if (this.pRemaining > 0) return true;
          this.payloadDone();
          break;
        }
        case P_SKIP: {
          const n = Math.min(avail, this.pRemaining);
          this.start += n;
          this.pRemaining -= n;
          if (this.pRemaining > 0) return true;
          this.chunkDone();
          break;
        }
      }
    }
  }

  /** The tag a reply's cookie names; -1 (and the connection lost) when it names no request that waits for one. */
  private replyTag(hi: number, lo: number): number {
    if (lo >= this.depth || this.tagState[lo] !== SENT || hi !== this.tagSeq[lo]) {
      this.protocolError(`a reply to cookie ${hi * 0x100000000 + lo}, which no request waits for`);
      return -1;
    }
    return lo;
  }

  /** What to do with a structured reply chunk whose header was just parsed. */
  private chunkHeader(): boolean {
    const type = this.pChunkType;
    const len = this.pChunkLength;
    const isRead = this.tagCmd[this.pTag] === NBD_CMD_READ;
    if (type === NBD_REPLY_TYPE_NONE) {
      if (len !== 0 || (this.pChunkFlags & NBD_REPLY_FLAG_DONE) === 0) return this.protocolError('a NONE chunk with a payload or without the DONE flag');
      this.chunkDone();
    } else if ((type === NBD_REPLY_TYPE_OFFSET_DATA && isRead && len >= 9) || (type === NBD_REPLY_TYPE_OFFSET_HOLE && isRead && len === 12)) {
      this.pState = P_META;
    } else if ((type === NBD_REPLY_TYPE_ERROR || type === NBD_REPLY_TYPE_ERROR_OFFSET) && len >= 6) {
      this.pState = P_META;
    } else if (type & NBD_REPLY_TYPE_IS_ERROR && len >= 4) {
      this.pState = P_META; // an error type this client does not know: its code still counts
    } else if (type === NBD_REPLY_TYPE_OFFSET_DATA || type === NBD_REPLY_TYPE_OFFSET_HOLE || type & NBD_REPLY_TYPE_IS_ERROR) {
      return this.protocolError(`a malformed reply chunk (type ${type}, ${len} bytes)`);
    } else {
      // Block status, or a type from an extension never negotiated: the spec's "hard disconnect".
      return this.protocolError(`a reply chunk of type ${type}, which this client never asks for`);
    }
    return true;
  }

  /**
   * Records that a chunk covered [rel, rel + length) of a read. False (the
   * connection is then lost) when it overlaps an earlier chunk, which the
   * spec forbids: the bytes under both would be whichever came last, and a
   * sum of lengths would count a gap as read.
   */
  private cover(tag: number, rel: number, length: number): boolean {
    const end = rel + length;
    const base = tag * MAX_PIECES;
    const starts = this.pieceStart;
    const ends = this.pieceEnd;
    let n = this.tagPieces[tag];
    let before = -1; // the piece that ends where this one starts
    let after = -1; // the piece that starts where this one ends
    for (let i = base; i < base + n; i++) {
      if (rel < ends[i] && end > starts[i]) return this.protocolError(`read chunks that overlap (tag ${tag})`);
      if (ends[i] === rel) before = i;
      else if (starts[i] === end) after = i;
    }
    if (before >= 0 && after >= 0) {
      // This chunk joins two pieces: the last piece moves into the place of the second.
      ends[before] = ends[after];
      n--;
      starts[after] = starts[base + n];
      ends[after] = ends[base + n];
      this.tagPieces[tag] = n;
    } else if (before >= 0) ends[before] = end;
    else if (after >= 0) starts[after] = rel;
    else if (n === MAX_PIECES) return this.protocolError(`a read reply in more than ${MAX_PIECES} separate pieces (tag ${tag})`);
    else {
      starts[base + n] = rel;
      ends[base + n] = end;
      this.tagPieces[tag] = n + 1;
    }
    return true;
  }

  /** The read's chunks covered all of it (they never overlap: cover() saw to that). */
  private covered(tag: number): boolean {
    const length = this.tagLength[tag];
    if (length === 0) return true;
    const base = tag * MAX_PIECES;
    return this.tagPieces[tag] === 1 && this.pieceStart[base] === 0 && this.pieceEnd[base] === length;
  }

  /** Bytes of a P_META chunk's fixed part: error chunks 4 (the code), data 8 (the offset), holes 12. */
  private metaLength(): number {
    if (this.pChunkType & NBD_REPLY_TYPE_IS_ERROR) return 4;
    return this.pChunkType === NBD_REPLY_TYPE_OFFSET_DATA ? 8 : 12;
  }

  private startPayload(tag: number, dst: number, length: number): void {
    this.pTag = tag;
    this.pDst = dst;
    this.pRemaining = length;
    this.pState = P_DATA;
    if (length === 0) this.payloadDone();
  }

  private payloadDone(): void {
    if (this.pSimple) {
      this.pState = P_HEADER;
      this.finish(this.pTag, this.tagLength[this.pTag]);
    } else this.chunkDone();
  }

  /** A structured chunk is over: the request completes with its last one (NBD_REPLY_FLAG_DONE). */
  private chunkDone(): void {
    this.pState = P_HEADER;
    if ((this.pChunkFlags & NBD_REPLY_FLAG_DONE) === 0) return;
    const tag = this.pTag;
    const cmd = this.tagCmd[tag];
    let res = this.tagError[tag];
    if (res === 0 && cmd === NBD_CMD_READ) res = this.covered(tag) ? this.tagLength[tag] : -EIO; // chunks must cover the read
    else if (res === 0 && cmd === NBD_CMD_WRITE) res = this.tagLength[tag];
    this.finish(tag, res);
  }

  private isBigRead(tag: number): boolean {
    return this.tagCmd[tag] === NBD_CMD_READ && this.tagLength[tag] >= DIRECT_MIN;
  }

  private finish(tag: number, res: number): void {
    if (this.tagState[tag] === SENT && this.isBigRead(tag)) this.bigReads--;
    this.tagState[tag] = IDLE;
    this.outstanding--;
    this.ctx.complete(tag, res);
  }

  private protocolError(what: string): false {
    this.lost(`the server sent ${what}`);
    return false;
  }

  /**
   * The connection is gone: its SQEs end (shutdown) and are ignored from
   * now on. Its requests fail with EIO, or wait for a new connection.
   */
  private lost(why: string): void {
    if (this.state !== CONN_UP) return;
    this.lastError = why;
    this.gen = (this.gen + 1) >>> 0;
    // Connected means no older SEND or RECV is left (the reconnect waited)
    // and no reconnect timer is armed: the rest are this connection's.
    this.oldSqes = this.sqes - this.ticks;
    this.ticking = false; // its CQE is of the old generation now: ignored
    // Its SQEs end at once on a shut-down socket: RECV with 0, SENDMSG with EPIPE.
    shutdownStream(this.fd);
    this.oldFd = this.fd;
    this.fd = -1;
    if (this.oldSqes === 0) this.closeOldFd();
    this.sending = this.receiving = false;
    this.pState = P_HEADER;
    this.start = this.end = 0;
    if (!this.data.reconnect) {
      this.state = CONN_FAILED;
      this.stats[NS.state] = CONN_FAILED;
      this.sendHead = this.sendLen = 0;
      for (let tag = 0; tag < this.depth; tag++) if (this.tagState[tag] !== IDLE) this.finish(tag, -EIO);
      return;
    }
    this.state = CONN_RECONNECTING;
    this.stats[NS.state] = CONN_RECONNECTING;
    // Everything not answered is sent again, on the new connection.
    this.sendHead = this.sendLen = 0;
    this.bigReads = 0;
    for (let tag = 0; tag < this.depth; tag++) if (this.tagState[tag] !== IDLE) this.enqueue(tag);
    this.reconnectMs = RECONNECT_FIRST_MS;
    this.armReconnect();
  }

  private armReconnect(): void {
    this.setTimespec(this.backoffTs, this.reconnectMs);
    const ring = this.ctx.ring;
    const sqe = this.ctx.getSqe();
    prepTimeout(ring, sqe, this.backoffTs);
    sqeSetData(ring, sqe, 0, RECONNECT_HI);
    this.sqes++;
  }

  private onReconnectTimer(): void {
    if (this.state !== CONN_RECONNECTING) return;
    // The old connection's RECV may still be writing where the new one would: wait for it to end.
    if (this.oldSqes === 0) {
      try {
        this.connect();
      } catch (e) {
        this.lastError = (e as Error).message;
        this.reconnectMs = Math.min(this.reconnectMs * 2, RECONNECT_MAX_MS);
        this.armReconnect();
        return;
      }
      this.state = CONN_UP;
      this.stats[NS.state] = CONN_UP;
      this.stats[NS.reconnects]++;
      this.armRecv();
      if (this.sendLen > 0) this.send();
      return;
    }
    this.armReconnect();
  }

  private closeOldFd(): void {
    if (this.oldFd < 0) return;
    native.close(this.oldFd);
    this.oldFd = -1;
  }

  private setTimespec(at: number, ms: number): void {
    const w = (at - this.mem.addr) >> 2;
    putU64(this.u32, w + kernel_timespec.tv_sec / 4, Math.floor(ms / 1000));
    putU64(this.u32, w + kernel_timespec.tv_nsec / 4, (ms % 1000) * 1e6);
  }

  close(): void {
    if (this.fd >= 0) {
      // A polite goodbye, unless a SENDMSG could still be on the stream (its bytes and ours would mix).
      if (!this.sending) {
        try {
          setTimeouts(this.fd, 1000);
          sendAll(this.fd, request(NBD_CMD_DISC, 0, 0, 0, 0));
        } catch {
          // the server is gone already
        }
      }
      shutdownStream(this.fd);
      native.close(this.fd);
      this.fd = -1;
    }
    this.closeOldFd();
    // SQEs still on the ring may write here until the ring is closed after us: then the memory stays.
    if (this.sqes === 0) this.mem.free();
  }
}
