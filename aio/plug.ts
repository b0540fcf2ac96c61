/**
 * The plug list (blk-mq plug, QEMU's io_q): iocbs queued since the last
 * io_submit, as a window [start, start + count) of the `struct iocb *[]`
 * array, so one io_submit sends the whole batch and a partial submit leaves
 * the rest in place for the next one (seed 002).
 */
import type { IocbTable } from './iocb.js';

export class Plug {
  /** Index of the first queued slot in the pointer array. */
  start = 0;
  /** Number of queued iocbs. */
  count = 0;
  private readonly tags: Int32Array;
  private readonly table: IocbTable;

  constructor(table: IocbTable) {
    this.table = table;
    this.tags = new Int32Array(table.depth);
  }

  /** Address of the first queued `struct iocb *`, for io_submit. */
  get head(): number {
    return this.table.ptrs + this.start * 8;
  }

  /** The tag in the first queued slot. */
  get first(): number {
    return this.tags[this.start];
  }

  /** The tag in queued slot i (0 = first). */
  tagAt(i: number): number {
    return this.tags[this.start + i];
  }

  /** Appends tag's iocb. A tag is queued at most once, so count < depth here. */
  push(tag: number): void {
    let end = this.start + this.count;
    if (end === this.tags.length) {
      // Slots before `start` were submitted: slide the queued window to 0.
      this.table.compact(this.start, this.count);
      this.tags.copyWithin(0, this.start, end);
      this.start = 0;
      end = this.count;
    }
    this.tags[end] = tag;
    this.table.setPtr(end, tag);
    this.count++;
  }

  /** Drops the first n slots (submitted, or completed with an error). */
  shift(n: number): void {
    this.count -= n;
    this.start = this.count === 0 ? 0 : this.start + n;
  }
}
