/**
 * Finished requests handed from one queue thread to another. The queues of
 * an rbd device share one image handle, so one completion eventfd: the
 * queue that polls librbd may find another queue's requests, and only the
 * owner may commit them (its tags live on its own ring). Each queue has a
 * ring here that any queue appends to and only the owner reads.
 */

/** Slots per queue: no queue has more requests out than ublk's largest depth. */
export const MAILBOX_SLOTS = 4096;
const MASK = MAILBOX_SLOTS - 1;
// Per slot: tag, result, and the sequence number (index + 1) that publishes it.
const TAG = 0;
const RES = 1;
const SEQ = 2;
const SLOT = 3;

export function mailboxBytes(queues: number): number {
  return 4 * (queues + queues * MAILBOX_SLOTS * SLOT);
}

export class Mailbox {
  /** tails[q]: slots of queue q handed out to writers so far (wraps at 2^31). */
  private readonly tails: Int32Array;
  private readonly slots: Int32Array;
  /** The next slot of the reader's own ring (owner's side only). */
  private head = 0;
  private readonly own: number;

  /** @param own the queue that reads (its ring's index) */
  constructor(buffer: SharedArrayBuffer, queues: number, own: number) {
    this.tails = new Int32Array(buffer, 0, queues);
    this.slots = new Int32Array(buffer, 4 * queues, queues * MAILBOX_SLOTS * SLOT);
    this.own = own;
  }

  /** Hands request `tag` of queue `to`, finished with `res`, to that queue. */
  post(to: number, tag: number, res: number): void {
    const i = Atomics.add(this.tails, to, 1);
    const s = (to * MAILBOX_SLOTS + (i & MASK)) * SLOT;
    this.slots[s + TAG] = tag;
    this.slots[s + RES] = res;
    // Publishes tag and res: pairs with the Atomics.load in ready().
    Atomics.store(this.slots, s + SEQ, (i + 1) | 0);
  }

  /** A request waits in this queue's ring: read it with tag() and res(), then next(). */
  ready(): boolean {
    const s = (this.own * MAILBOX_SLOTS + (this.head & MASK)) * SLOT;
    return Atomics.load(this.slots, s + SEQ) === ((this.head + 1) | 0);
  }
  tag(): number {
    return this.slots[(this.own * MAILBOX_SLOTS + (this.head & MASK)) * SLOT + TAG];
  }
  res(): number {
    return this.slots[(this.own * MAILBOX_SLOTS + (this.head & MASK)) * SLOT + RES];
  }
  next(): void {
    this.head = (this.head + 1) | 0;
  }
}
