/**
 * Userspace reaping of `struct aio_ring` (seed 001, as QEMU's
 * io_getevents_peek()/io_getevents_commit() and fio's user_io_getevents()):
 * the completion ring io_setup maps into the process is read directly, so
 * reaping costs no system call.
 */
import * as native from '../sys/native.js';
import { AIO_RING_INCOMPAT_FEATURES, AIO_RING_MAGIC, aio_ring, io_event } from './iocb.js';

const HEAD = aio_ring.head / 4;
const TAIL = aio_ring.tail / 4;
const EVENT_I32 = io_event.SIZE / 4;
const FIRST_EVENT = aio_ring.io_events / 4;
const DATA = io_event.data / 4;
const RES = io_event.res / 4;

export interface AioRingHeader {
  id: number;
  nr: number;
  head: number;
  tail: number;
  magic: number;
  compat_features: number;
  incompat_features: number;
  header_length: number;
}

/** Reads the aio_ring header at `ctx` (the aio_context_t). */
export function readRingHeader(ctx: number): AioRingHeader {
  const h = new Uint32Array(native.view(ctx, aio_ring.SIZE));
  return {
    id: h[aio_ring.id / 4],
    nr: h[aio_ring.nr / 4],
    head: h[HEAD],
    tail: h[TAIL],
    magic: h[aio_ring.magic / 4],
    compat_features: h[aio_ring.compat_features / 4],
    incompat_features: h[aio_ring.incompat_features / 4],
    header_length: h[aio_ring.header_length / 4],
  };
}

/** Whether this kernel's ring is one we know how to read (fio and QEMU check the magic; we check the layout too). */
export function ringUsable(h: AioRingHeader): boolean {
  return (
    h.magic === AIO_RING_MAGIC &&
    h.incompat_features === AIO_RING_INCOMPAT_FEATURES &&
    h.header_length === aio_ring.SIZE &&
    h.nr > 0
  );
}

export class AioRing {
  /** The ring's own number of io_events; indices wrap here, not at the io_setup argument. */
  readonly nr: number;
  /** ring[0..7] is the header (khead = [2], ktail = [3]), then io_events of 8 i32 each. */
  private readonly r: Int32Array;

  /** `ctx` must have passed `ringUsable(readRingHeader(ctx))`. */
  constructor(ctx: number, nr: number) {
    this.nr = nr;
    this.r = new Int32Array(native.view(ctx, aio_ring.SIZE + nr * io_event.SIZE));
  }

  /** Cheap peek for pollers: has the kernel posted events we have not consumed? */
  hasEvents(): boolean {
    return Atomics.load(this.r, TAIL) !== this.r[HEAD];
  }

  /**
   * Moves the posted events into tags[]/res[] (each at least `nr` long; the
   * ring never holds more than nr - 1) and consumes them. Returns how many.
   */
  reap(tags: Int32Array, res: Int32Array): number {
    const r = this.r;
    const nr = this.nr;
    // Acquire: pairs with the smp_wmb() before `ring->tail = tail` in
    // aio_complete() (fs/aio.c), so the event slots below are read after they
    // were written. Only this thread moves head (io_getevents included).
    const tail = Atomics.load(r, TAIL) % nr;
    let head = r[HEAD] % nr;
    let n = 0;
    while (head !== tail) {
      const e = FIRST_EVENT + head * EVENT_I32;
      tags[n] = r[e + DATA]; // aio_data lo 32 bits: the tag
      res[n] = r[e + RES]; // res lo 32 bits: bytes (< 2 GiB) or -errno
      n++;
      head = head + 1 === nr ? 0 : head + 1;
    }
    if (n !== 0) {
      // Release: the slot reads above happen before the kernel may reuse them.
      // Pairs with the kernel's read of ring->head in aio_read_events_ring()
      // and user_refill_reqs_available()/refill_reqs_available(), which give
      // the consumed slots back to io_submit (so EAGAIN clears).
      Atomics.store(r, HEAD, head);
    }
    return n;
  }
}
