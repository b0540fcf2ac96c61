/**
 * One queue of the qcow2 target (in the queue's worker thread). A request
 * is walked extent by extent (layer.ts resolve()): each run of contiguous
 * host clusters is one kernel AIO on that layer's file, through the same
 * engine as the loop target; zeros are filled in memory; a compressed
 * cluster is read and inflated in place. A read or write of allocated
 * clusters therefore costs one data IO and no metadata IO.
 *
 * A write to a cluster that is not writable in place allocates under the
 * metadata lock (meta.ts), copies the rest of the cluster from below
 * (backing file, compressed or shared cluster) when it has to, writes the
 * data, and only then links the cluster into the L2 table in memory: no
 * reader ever sees a cluster before its data. A second request for a
 * cluster being allocated waits (it is retried when the first links).
 * FLUSH (and FUA) go to the metadata writer thread (writer.ts).
 */
import { AioEngine } from '../../aio/engine.js';
import * as file from '../../sys/file.js';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE } from '../../sys/file.js';
import { NativeMemory } from '../../sys/memory.js';
import { SysError } from '../../sys/error.js';
import {
  UBLK_IO_F_FUA,
  UBLK_IO_F_NOUNMAP,
  UBLK_IO_OP_DISCARD,
  UBLK_IO_OP_FLUSH,
  UBLK_IO_OP_READ,
  UBLK_IO_OP_WRITE,
  UBLK_IO_OP_WRITE_ZEROES,
} from '../../sys/ublk/io.js';
import type { QueueContext, TargetQueue } from '../target.js';
import { L2_COMPRESSED, L2_COPIED, L2_ZERO, entryOffset } from './format.js';
import { EXT_DATA, EXT_ZERO, type Extent, type LayerData, newExtent, readCompressed, readGuest, resolve } from './layer.js';
import { Ctl, Meta, type MetaData, Num } from './meta.js';
import { EBADF, EIO, EOPNOTSUPP } from '../../sys/errno.js';


/** What every queue gets from open() (index.ts). */
export interface Qcow2QueueData {
  layers: LayerData[];
  /** null: the image is only read. */
  meta: MetaData | null;
}

// allocate() answers, besides -errno.
const ISSUED = 1; // the data write is with the AIO engine
const RETRY = 2; // the cluster became writable in place meanwhile
const DEFER = 3; // another request is allocating it: wait for its link
const ZERO_BY_WRITE = 4; // zeroCluster(): zeros must be written (version 2 over a backing file)
const PUNCH_THEN_ZERO = 5; // zeroEntry(): punch the cluster's blocks, then set its zero flag
const PUNCH = 6; // zeroEntry(): punch the cluster's blocks (a version 2 DISCARD over a backing file)

// Where an allocated cluster's other bytes come from.
const SRC_ZEROS = 0;
const SRC_BELOW = 1; // the backing chain
const SRC_COMPRESSED = 2; // the old compressed cluster
const SRC_SHARED = 3; // the old cluster, shared (refcount > 1)

export class Qcow2Queue implements TargetQueue {
  readonly eventFd: number;
  readonly statsBuffer: SharedArrayBuffer;
  private readonly ctx: QueueContext;
  private readonly layers: LayerData[];
  private readonly L: LayerData;
  private readonly cs: number;
  private readonly meta: Meta | null;
  private readonly ctl: Int32Array | null;
  private readonly aio: AioEngine;
  private readonly x = newExtent();
  // Per tag: the request and how far it got.
  private readonly op: Uint8Array;
  /** WRITE: FUA; DISCARD and WRITE_ZEROES: NOUNMAP (keep the clusters allocated). */
  private readonly fua: Uint8Array;
  private readonly pos: Float64Array;
  private readonly end: Float64Array;
  /** Bytes done (READ/WRITE: the result). */
  private readonly done: Float64Array;
  /** The AIO in flight: its length. */
  private readonly piece: Float64Array;
  /** Where the current write run ends, and whether it writes zeros (WRITE_ZEROES). */
  private readonly segEnd: Float64Array;
  private readonly segZero: Uint8Array;
  /** The epoch parity the request pinned (meta.ts), or -1. */
  private readonly parity: Int8Array;
  // Per tag: the allocation its AIO write completes.
  private readonly allocG: Float64Array;
  private readonly allocN: Uint32Array;
  private readonly allocHost: Float64Array;
  /** 1: the old entry's clusters are released at link; 2: the host cluster was the entry's own (reused). */
  private readonly allocOld: Uint8Array;
  private readonly oldHi: Uint32Array;
  private readonly oldLo: Uint32Array;
  // FLUSH (and FUA) requests waiting for the writer.
  private readonly flushGen: Float64Array;
  private readonly flushResult: Float64Array;
  private readonly flushWaiting: Int32Array;
  private nFlushWaiting = 0;
  /** Requests waiting for another's allocation of their cluster. */
  private readonly deferred: Int32Array;
  private nDeferred = 0;
  /** The deferred requests being retried (a retry may defer again). */
  private readonly retrying: Int32Array;
  /** A cluster's bytes (copy on write, compressed clusters), and zeros; made when first needed. */
  private scratch: NativeMemory | null = null;
  private zeros: NativeMemory | null = null;

  constructor(ctx: QueueContext, data: Qcow2QueueData) {
    this.ctx = ctx;
    this.layers = data.layers;
    this.L = data.layers[0];
    this.cs = 2 ** this.L.clusterBits;
    this.meta = data.meta !== null ? new Meta(data.meta, this.L) : null;
    this.ctl = data.meta !== null ? data.meta.ctl : null;
    const depth = ctx.depth;
    this.op = new Uint8Array(depth);
    this.fua = new Uint8Array(depth);
    this.pos = new Float64Array(depth);
    this.end = new Float64Array(depth);
    this.done = new Float64Array(depth);
    this.piece = new Float64Array(depth);
    this.segEnd = new Float64Array(depth);
    this.segZero = new Uint8Array(depth);
    this.parity = new Int8Array(depth).fill(-1);
    this.allocG = new Float64Array(depth).fill(-1);
    this.allocN = new Uint32Array(depth);
    this.allocHost = new Float64Array(depth);
    this.allocOld = new Uint8Array(depth);
    this.oldHi = new Uint32Array(depth);
    this.oldLo = new Uint32Array(depth);
    this.flushGen = new Float64Array(depth);
    this.flushResult = new Float64Array(depth);
    this.flushWaiting = new Int32Array(depth);
    this.deferred = new Int32Array(depth);
    this.retrying = new Int32Array(depth);
    this.aio = new AioEngine({ depth }, (tag, res) => this.onAio(tag, res));
    this.eventFd = this.aio.eventFd;
    this.statsBuffer = this.aio.stats.buffer;
    // The writer and other queues wake this one through the engine's eventfd.
    if (data.meta !== null) Atomics.store(data.meta.queueEfd, ctx.qId, this.eventFd + 1);
  }

  queueIo(tag: number, op: number, flags: number, offset: number, length: number): number | undefined {
    let r: number | undefined;
    switch (op) {
      case UBLK_IO_OP_READ:
        this.start(tag, op, offset, length);
        r = this.read(tag);
        break;
      case UBLK_IO_OP_WRITE:
        if (this.meta === null) return -EBADF;
        this.start(tag, op, offset, length);
        this.fua[tag] = flags & UBLK_IO_F_FUA ? 1 : 0;
        this.segEnd[tag] = offset + length;
        this.segZero[tag] = 0;
        r = this.writeRun(tag);
        if (r === 0) r = this.writeDone(tag);
        break;
      case UBLK_IO_OP_FLUSH:
        if (this.meta === null) return 0;
        this.requestFlush(tag, 0);
        return undefined;
      case UBLK_IO_OP_DISCARD:
      case UBLK_IO_OP_WRITE_ZEROES:
        if (this.meta === null) return -EBADF;
        this.start(tag, op, offset, length);
        this.fua[tag] = flags & UBLK_IO_F_NOUNMAP ? 1 : 0;
        r = this.zeroes(tag);
        break;
      default:
        return -EOPNOTSUPP;
    }
    if (r !== undefined) this.unpin(tag);
    return r;
  }

  private start(tag: number, op: number, offset: number, length: number): void {
    this.op[tag] = op;
    this.pos[tag] = offset;
    this.end[tag] = offset + length;
    this.done[tag] = 0;
    this.segEnd[tag] = 0;
    this.segZero[tag] = 0;
    if (this.meta !== null) this.parity[tag] = this.meta.pin(this.ctx.qId);
  }

  private unpin(tag: number): void {
    const p = this.parity[tag];
    if (p >= 0) {
      this.parity[tag] = -1;
      this.meta!.unpin(this.ctx.qId, p);
    }
  }

  private finish(tag: number, res: number): void {
    this.unpin(tag);
    this.ctx.complete(tag, res);
  }

  /** Goes on with a READ: zeros and compressed clusters at once, until an extent needs an AIO. */
  private read(tag: number): number | undefined {
    const layers = this.layers;
    const x = this.x;
    const end = this.end[tag];
    const buf = this.ctx.buffer(tag);
    let pos = this.pos[tag];
    let done = this.done[tag];
    while (pos < end) {
      resolve(layers, 0, pos, end - pos, x, this.meta);
      if (x.kind === EXT_DATA) {
        this.pos[tag] = pos;
        this.done[tag] = done;
        this.piece[tag] = x.length;
        this.aio.read(tag, layers[x.layer].fd, this.ctx.bufferAddr(tag) + done, x.length, x.host);
        return undefined;
      }
      if (x.kind === EXT_ZERO) {
        buf.fill(0, done, done + x.length);
      } else {
        const err = this.readCompressedExtent(x, pos, buf.subarray(done, done + x.length));
        if (err < 0) return done > 0 ? done : err;
      }
      pos += x.length;
      done += x.length;
    }
    return done;
  }

  /** Guest bytes of a compressed extent (resolve()'s), from pos on, into dest. */
  private readCompressedExtent(x: Extent, pos: number, dest: Uint8Array): number {
    const L = this.layers[x.layer];
    const cs = 2 ** L.clusterBits;
    const cluster = this.scratchBytes(cs);
    try {
      readCompressed(L, x.hi, x.lo, cluster);
    } catch {
      return -EIO;
    }
    const from = pos - x.host * cs; // x.host: the guest cluster
    dest.set(cluster.subarray(from, from + dest.length));
    return 0;
  }

  /**
   * Goes on with the current write run [pos, segEnd): in place where the
   * map allows, else allocating. Returns undefined while an AIO (or a
   * wait) is pending, 0 when the run is written, or -errno.
   */
  private writeRun(tag: number): number | undefined {
    const L = this.L;
    const cs = this.cs;
    const map = L.map;
    const segEnd = this.segEnd[tag];
    for (;;) {
      const pos = this.pos[tag];
      if (pos >= segEnd) return 0;
      const g = Math.floor(pos / cs);
      const e = map[g];
      if (e > 0) {
        let run = (g + 1) * cs - pos;
        for (let i = 1; pos + run < segEnd && map[g + i] === e + i; i++) run += cs;
        const len = pos + run < segEnd ? run : segEnd - pos;
        this.piece[tag] = len;
        this.aio.write(tag, L.fd, this.source(tag), len, e * cs + (pos - g * cs));
        return undefined;
      }
      const r = this.allocate(tag, g);
      if (r === ISSUED) return undefined;
      if (r === DEFER) {
        this.deferred[this.nDeferred++] = tag;
        return undefined;
      }
      if (r < 0) return r;
      // RETRY: look at the map again.
    }
  }

  /** Where the bytes of the write at pos[tag] are. */
  private source(tag: number): number {
    return this.segZero[tag] ? this.zeroBuffer().addr : this.ctx.bufferAddr(tag) + this.done[tag];
  }

  /** A WRITE is all written: done, or (FUA) done once the writer made it durable. */
  private writeDone(tag: number): number | undefined {
    if (this.fua[tag] === 0) return this.done[tag];
    this.requestFlush(tag, this.done[tag]);
    return undefined;
  }

  /**
   * Guest cluster g (where pos[tag] lies) is not writable in place:
   * allocate (several clusters at once when they all start as zeros),
   * copy what the write does not cover, issue the write.
   */
  private allocate(tag: number, g: number): number {
    const meta = this.meta!;
    let r: number;
    meta.lock();
    try {
      r = this.reserve(tag, g);
    } finally {
      meta.unlock();
    }
    if (r !== ISSUED) return r;
    const cs = this.cs;
    const n = this.allocN[tag];
    const host = this.allocHost[tag];
    const pos = this.pos[tag];
    const stop = Math.min(this.segEnd[tag], (g + n) * cs);
    const head = pos - g * cs;
    const tail = (g + n) * cs - stop;
    try {
      if (this.allocSrc === SRC_ZEROS) {
        // A cluster used before holds old bytes: the parts this write leaves must read as zeros.
        if (!this.allocFresh && (head > 0 || tail > 0)) this.zeroHost(host * cs, n * cs);
      } else if (head > 0 || tail > 0) {
        this.copyOnWrite(this.allocSrc, g, this.oldHi[tag], this.oldLo[tag], host, head, tail);
      }
    } catch (e) {
      this.abortAllocation(tag);
      return -((e as SysError).errno ?? EIO);
    }
    this.piece[tag] = stop - pos;
    this.aio.write(tag, this.L.fd, this.source(tag), stop - pos, host * cs + head);
    return ISSUED;
  }

  /** What reserve() found: where the cluster's other bytes come from, and whether its host clusters read zeros. */
  private allocSrc = SRC_ZEROS;
  private allocFresh = false;

  /**
   * Locked. Decides how guest cluster g gets a host cluster and takes it:
   * ISSUED (the allocation is the tag's; allocate() writes), RETRY, DEFER or -errno.
   */
  private reserve(tag: number, g: number): number {
    const meta = this.meta!;
    const d = meta.d;
    const L = this.L;
    const cs = this.cs;
    const layers = this.layers;
    if (L.map[g] > 0) return RETRY;
    if (d.busy[g] !== 0) {
      Atomics.add(d.queueWaiting, this.ctx.qId, 1);
      d.num[Num.DEFERRED]++;
      return DEFER;
    }
    const hi = L.l2[2 * g];
    const lo = L.l2[2 * g + 1];
    const off = hi & L2_COMPRESSED ? 0 : entryOffset(hi, lo);
    const below = layers.length > 1 && g * cs < layers[1].size;
    let src = SRC_ZEROS;
    let old = 0; // 0: nothing to release, 1: release the old entry, 2: reuse its cluster
    if (hi & L2_COMPRESSED) {
      src = SRC_COMPRESSED;
      old = 1;
    } else if (lo & L2_ZERO && L.version >= 3) {
      if (off > 0) old = d.refcounts[off / cs] === 1 && hi & L2_COPIED ? 2 : 1;
    } else if (off > 0) {
      src = SRC_SHARED;
      old = 1;
    } else if (below) {
      src = SRC_BELOW;
    }
    let n = 1;
    if (src === SRC_ZEROS && old === 0 && !below) {
      // Neighbours that also start as zeros go in the same allocation (one write, contiguous clusters).
      const limit = Math.ceil(this.segEnd[tag] / cs);
      while (g + n < limit && L.l2[2 * (g + n)] === 0 && L.l2[2 * (g + n) + 1] === 0 && d.busy[g + n] === 0) n++;
    }
    for (let i = 0; i < n; i++) {
      const r = meta.ensureL2(g + i);
      if (r < 0) return r;
    }
    let host = off / cs;
    let fresh = false;
    if (old !== 2) {
      host = meta.allocate(n);
      if (host < 0) return host;
      n = meta.count;
      fresh = meta.fresh;
    }
    for (let i = 0; i < n; i++) d.busy[g + i] = 1;
    if (src !== SRC_ZEROS) d.num[Num.COW]++;
    this.allocG[tag] = g;
    this.allocN[tag] = n;
    this.allocHost[tag] = host;
    this.allocOld[tag] = old;
    this.oldHi[tag] = hi;
    this.oldLo[tag] = lo;
    this.allocSrc = src;
    this.allocFresh = fresh;
    return ISSUED;
  }

  /** The bytes of cluster g that a write leaves, from where they were, into the new host cluster. */
  private copyOnWrite(src: number, g: number, hi: number, lo: number, host: number, head: number, tail: number): void {
    const cs = this.cs;
    const L = this.L;
    const cluster = this.scratchBytes(cs);
    if (src === SRC_BELOW) {
      readGuest(this.layers, 1, g * cs, cluster);
    } else if (src === SRC_COMPRESSED) {
      readCompressed(L, hi, lo, cluster);
    } else {
      const n = file.pread(L.metaFd, cluster, cs, entryOffset(hi, lo));
      cluster.fill(0, n); // past the end of the file: zeros
    }
    const mem = this.scratch!;
    if (head > 0) this.writeAll(mem.addr, head, host * cs);
    if (tail > 0) this.writeAll(mem.addr + cs - tail, tail, host * cs + cs - tail);
  }

  private writeAll(addr: number, length: number, offset: number): void {
    const n = file.pwrite(this.L.fd, addr, length, offset);
    if (n !== length) throw new SysError('pwrite', 28);
  }

  /** Makes host bytes read as zeros: a hole punched, or zeros written where the filesystem punches none. */
  private zeroHost(offset: number, length: number): void {
    try {
      file.fallocate(this.L.metaFd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
      return;
    } catch (e) {
      if (!(e instanceof SysError && e.code === 'EOPNOTSUPP')) throw e;
    }
    const zeros = this.zeroBuffer();
    for (let at = 0; at < length; at += this.cs) this.writeAll(zeros.addr, Math.min(this.cs, length - at), offset + at);
  }

  /** The data of an allocating write is on disk: the clusters join the L2 table (in memory). */
  private link(tag: number): void {
    const meta = this.meta!;
    const d = meta.d;
    const g = this.allocG[tag];
    const n = this.allocN[tag];
    const host = this.allocHost[tag];
    meta.lock();
    try {
      for (let i = 0; i < n; i++) {
        meta.link(g + i, host + i);
        d.busy[g + i] = 0;
      }
      if (this.allocOld[tag] === 1) meta.release(this.oldHi[tag], this.oldLo[tag]);
    } finally {
      meta.unlock();
    }
    this.allocG[tag] = -1;
    meta.wakeWaiters(this.ctx.qId);
  }

  /** The data write of an allocation failed: its clusters go back unused. */
  private abortAllocation(tag: number): void {
    const meta = this.meta!;
    const d = meta.d;
    const g = this.allocG[tag];
    const n = this.allocN[tag];
    meta.lock();
    try {
      if (this.allocOld[tag] !== 2) meta.unallocate(this.allocHost[tag], n);
      for (let i = 0; i < n; i++) d.busy[g + i] = 0;
    } finally {
      meta.unlock();
    }
    this.allocG[tag] = -1;
    meta.wakeWaiters(this.ctx.qId);
  }

  /**
   * Goes on with a DISCARD or WRITE_ZEROES: whole clusters change their
   * L2 entry (zero flag, or deallocation in version 2), parts of clusters
   * get a hole punched (DISCARD) or zeros written (WRITE_ZEROES).
   */
  private zeroes(tag: number): number | undefined {
    const L = this.L;
    const cs = this.cs;
    const discard = this.op[tag] === UBLK_IO_OP_DISCARD;
    const end = this.end[tag];
    for (;;) {
      const pos = this.pos[tag];
      if (pos >= end) return 0;
      const g = Math.floor(pos / cs);
      const clusterEnd = Math.min((g + 1) * cs, L.size);
      const pieceEnd = Math.min(end, clusterEnd);
      if (pos === g * cs && pieceEnd === clusterEnd) {
        const r = this.zeroCluster(g, discard, this.fua[tag] === 1);
        if (r === DEFER) {
          this.deferred[this.nDeferred++] = tag;
          return undefined;
        }
        if (r < 0) return r;
        if (r !== ZERO_BY_WRITE) {
          this.pos[tag] = pieceEnd;
          continue;
        }
      } else if (discard) {
        const e = L.map[g];
        if (e > 0) {
          try {
            file.fallocate(L.metaFd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, e * cs + (pos - g * cs), pieceEnd - pos);
          } catch {
            // A discard is a hint: a filesystem without holes keeps the bytes.
          }
        }
        this.pos[tag] = pieceEnd;
        continue;
      }
      this.segEnd[tag] = pieceEnd;
      this.segZero[tag] = 1;
      const r = this.writeRun(tag);
      if (r !== 0) return r;
    }
  }

  /** Zeros a whole guest cluster through its L2 entry. */
  private zeroCluster(g: number, discard: boolean, noUnmap: boolean): number {
    const meta = this.meta!;
    let r: number;
    meta.lock();
    try {
      r = this.zeroEntry(g, discard, noUnmap);
    } finally {
      meta.unlock();
    }
    if (r !== PUNCH_THEN_ZERO && r !== PUNCH) return r;
    const off = this.punchAt;
    let err = 0;
    try {
      file.fallocate(this.L.metaFd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, this.cs);
    } catch (e) {
      // A DISCARD is a hint: a filesystem without holes keeps the bytes.
      if (!(e instanceof SysError && e.code === 'EOPNOTSUPP') && !discard) err = -((e as SysError).errno ?? EIO);
    }
    if (r === PUNCH) return 0;
    meta.lock();
    try {
      if (err === 0) meta.setZero(g, off / this.cs);
      meta.d.busy[g] = 0;
    } finally {
      meta.unlock();
    }
    meta.wakeWaiters(this.ctx.qId);
    return err;
  }

  /** Where zeroCluster() punches (set by zeroEntry()). */
  private punchAt = 0;

  /**
   * Locked. Zeros guest cluster g in its L2 entry where that is all it
   * takes (0); else says what zeroCluster() must do: PUNCH_THEN_ZERO (the
   * cluster is busy until then), PUNCH, ZERO_BY_WRITE; or DEFER, -errno.
   */
  private zeroEntry(g: number, discard: boolean, noUnmap: boolean): number {
    const meta = this.meta!;
    const d = meta.d;
    const L = this.L;
    const cs = this.cs;
    if (d.busy[g] !== 0) {
      Atomics.add(d.queueWaiting, this.ctx.qId, 1);
      return DEFER;
    }
    const hi = L.l2[2 * g];
    const lo = L.l2[2 * g + 1];
    const compressed = (hi & L2_COMPRESSED) !== 0;
    const off = compressed ? 0 : entryOffset(hi, lo);
    const own = off > 0 && d.refcounts[off / cs] === 1;
    const below = this.layers.length > 1 && g * cs < this.layers[1].size;
    const unallocated = hi === 0 && lo === 0;
    this.punchAt = off;
    if (L.version >= 3) {
      if (own) {
        // The cluster stays this guest cluster's; unless told to keep them, its blocks go back to the filesystem.
        if (!discard && noUnmap) {
          meta.setZero(g, off / cs);
          return 0;
        }
        d.busy[g] = 1;
        return PUNCH_THEN_ZERO;
      }
      if ((unallocated && (!below || discard)) || (lo & L2_ZERO && off === 0 && !compressed)) {
        return 0; // reads zeros already (or, discarded, may keep the backing file's bytes)
      }
      const r = meta.ensureL2(g);
      if (r < 0) return r;
      meta.setZero(g, 0);
      if (!unallocated) meta.release(hi, lo);
      return 0;
    }
    // Version 2 has no zero flag: an unallocated cluster reads zeros only without a backing file.
    if (!below) {
      if (!unallocated) {
        meta.setEntry(g, 0, 0);
        meta.release(hi, lo);
      }
      return 0;
    }
    if (!discard) return ZERO_BY_WRITE;
    return own ? PUNCH : 0;
  }

  /** FLUSH (or the end of a FUA write): completes with `result` once the writer has flushed. */
  private requestFlush(tag: number, result: number): void {
    const ctl = this.ctl!;
    this.flushGen[tag] = Atomics.add(ctl, Ctl.FLUSH_REQ, 1) + 1;
    this.flushResult[tag] = result;
    this.flushWaiting[this.nFlushWaiting++] = tag;
    Atomics.notify(ctl, Ctl.FLUSH_REQ); // the writer waits on this word
  }

  private checkFlushes(): void {
    const ctl = this.ctl!;
    const doneGen = Atomics.load(ctl, Ctl.FLUSH_DONE);
    const failed = Atomics.load(ctl, Ctl.FAILED);
    let kept = 0;
    const n = this.nFlushWaiting;
    for (let i = 0; i < n; i++) {
      const tag = this.flushWaiting[i];
      if (this.flushGen[tag] <= doneGen) this.finish(tag, failed !== 0 ? -EIO : this.flushResult[tag]);
      else this.flushWaiting[kept++] = tag;
    }
    this.nFlushWaiting = kept;
  }

  private onAio(tag: number, res: number): void {
    const op = this.op[tag];
    const piece = this.piece[tag];
    if (op === UBLK_IO_OP_READ) {
      if (res < 0) return this.finish(tag, this.done[tag] > 0 ? this.done[tag] : res);
      // Short: the extent runs past the end of its file, which reads as zeros.
      if (res < piece) this.ctx.buffer(tag).fill(0, this.done[tag] + res, this.done[tag] + piece);
      this.pos[tag] += piece;
      this.done[tag] += piece;
      const r = this.read(tag);
      if (r !== undefined) this.finish(tag, r);
      return;
    }
    const allocating = this.allocG[tag] >= 0;
    if (res < piece) {
      // A failed (or, allocating, short) write: nothing of this piece is linked.
      if (allocating) this.abortAllocation(tag);
      if (res > 0 && !allocating) this.done[tag] += res;
      const done = op === UBLK_IO_OP_WRITE ? this.done[tag] : 0;
      return this.finish(tag, done > 0 ? done : res < 0 ? res : -EIO);
    }
    if (allocating) this.link(tag);
    this.pos[tag] += piece;
    if (this.segZero[tag] === 0) this.done[tag] += piece;
    this.continueWrite(tag);
  }

  private continueWrite(tag: number): void {
    let r = this.writeRun(tag);
    if (r === 0) r = this.op[tag] === UBLK_IO_OP_WRITE ? this.writeDone(tag) : this.zeroes(tag);
    if (r !== undefined) this.finish(tag, r);
  }

  flush(): void {
    this.pump();
  }

  reap(): void {
    this.aio.reap();
    if (this.meta !== null) {
      if (this.nFlushWaiting > 0) this.checkFlushes();
      if (this.nDeferred > 0) this.retryDeferred();
    }
    this.pump();
  }

  /** Submits what completions and retries queued (a completion may queue the next extent's IO). */
  private pump(): void {
    for (let i = 0; i < 16 && this.aio.queued > 0; i++) {
      const before = this.aio.queued;
      this.aio.flush();
      if (this.aio.queued >= before) break; // EAGAIN: the engine tries again as IO completes
    }
  }

  private retryDeferred(): void {
    const n = this.nDeferred;
    this.nDeferred = 0;
    Atomics.sub(this.meta!.d.queueWaiting, this.ctx.qId, n);
    const tags = this.retrying;
    tags.set(this.deferred.subarray(0, n));
    for (let i = 0; i < n; i++) {
      const tag = tags[i];
      if (this.op[tag] === UBLK_IO_OP_WRITE) this.continueWrite(tag);
      else if (this.segZero[tag] === 1 && this.pos[tag] < this.segEnd[tag]) this.continueWrite(tag);
      else {
        const r = this.zeroes(tag);
        if (r !== undefined) this.finish(tag, r);
      }
    }
  }

  hasCompletions(): boolean {
    if (this.aio.hasCompletions()) return true;
    return this.nFlushWaiting > 0 && Atomics.load(this.ctl!, Ctl.FLUSH_DONE) >= this.flushGen[this.flushWaiting[0]];
  }

  inFlight(): number {
    return this.aio.inFlight + this.aio.queued;
  }

  private scratchBytes(cs: number): Uint8Array {
    if (this.scratch === null || this.scratch.size < cs) {
      this.scratch?.free();
      let max = cs;
      for (const L of this.layers) if (L.format === 'qcow2') max = Math.max(max, 2 ** L.clusterBits);
      this.scratch = NativeMemory.aligned(max);
    }
    return new Uint8Array(this.scratch.buffer, 0, cs);
  }

  private zeroBuffer(): NativeMemory {
    this.zeros ??= NativeMemory.aligned(this.cs);
    return this.zeros;
  }

  close(): void {
    // io_destroy waits for IO still in flight, so no AIO writes into freed buffers.
    this.aio.destroy();
    if (this.meta !== null) {
      for (let tag = 0; tag < this.ctx.depth; tag++) this.unpin(tag);
      Atomics.store(this.meta.d.queueEfd, this.ctx.qId, 0);
    }
    this.scratch?.free();
    this.zeros?.free();
  }
}
