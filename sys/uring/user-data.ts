/**
 * The one user_data codec of a queue's io_uring. user_data is written and
 * read as two u32 halves (sqeSetData, cqeDataLo/Hi), so numbers never become
 * BigInt. The high word's top two bits name the owner of the SQE, as the top
 * bit does in libublk-rs; the other 30 bits are the owner's own kind; the
 * low word is the tag (or whatever the owner keeps there).
 */

/** Owners (the high word's top two bits). */
export const USER_DATA_IO_CMD = 0; // a ublk FETCH / COMMIT_AND_FETCH command
export const USER_DATA_INTERNAL = 0x40000000; // the dispatcher's own reads (kick and target eventfds)
export const USER_DATA_TARGET = 0x80000000; // an SQE a target put on the queue ring

const OWNER_MASK = 0xc0000000;
const KIND_MASK = 0x3fffffff;

/** The high word of an SQE of `owner` (a USER_DATA_* value) and the owner's `kind`. */
export function userDataHi(owner: number, kind: number): number {
  return (owner | (kind & KIND_MASK)) >>> 0;
}

/** The USER_DATA_* owner named by a CQE's user_data high word. */
export function userDataOwner(hi: number): number {
  return (hi & OWNER_MASK) >>> 0;
}

/** The owner's kind in a CQE's user_data high word. */
export function userDataKind(hi: number): number {
  return hi & KIND_MASK;
}
