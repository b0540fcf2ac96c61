/**
 * Adaptive polling in the manner of QEMU's AioContext (seed 004): before
 * blocking, spin on cheap probes (a ring tail) for up to `pollNs`; after the
 * wait, grow `pollNs` (4 µs, then ×2, up to pollMaxNs) when the whole wait
 * was short enough that polling longer would have caught it, and drop it to
 * 0 when the wait took longer than pollMaxNs. pollMaxNs = 0 never polls.
 *
 * One poller serves any number of sources: the ublk queue dispatcher probes
 * its io_uring CQ and a target's completion ring in the same `run()`. It
 * lives here, below both the AIO engine and the ublk queue, because it knows
 * neither: whoever counts its hits and misses hands it the slots.
 */
import { performance } from 'node:perf_hooks';

/** QEMU starts polling at 4 µs and doubles (aio_poll() in util/aio-posix.c). */
export const POLL_INITIAL_NS = 4000;
export const POLL_GROW = 2;

/** Where a poller counts: slots of a caller's Float64Array (plain stores, one writer). */
export interface PollCounters {
  array: Float64Array;
  /** Polls that found work. */
  hits: number;
  /** Polls that timed out. */
  misses: number;
  /** The current poll time in ns. */
  pollNs: number;
}

export class AdaptivePoller {
  readonly pollMaxNs: number;
  /** Current polling time in ns (0: do not poll). */
  pollNs = 0;
  private readonly counters: PollCounters | undefined;
  private startMs = 0;

  constructor(pollMaxNs: number, counters?: PollCounters) {
    if (!(pollMaxNs >= 0)) throw new RangeError(`pollMaxNs must be ≥ 0, not ${pollMaxNs}`);
    this.pollMaxNs = pollMaxNs;
    this.counters = counters;
  }

  /**
   * Starts a wait: notes the time (for `blocked()`), then calls `probe` until
   * it returns true or pollNs have passed. Returns whether a probe hit; a
   * false return means the caller should block now. Allocates nothing.
   */
  run(probe: () => boolean): boolean {
    const start = performance.now();
    this.startMs = start;
    const ns = this.pollNs;
    if (ns === 0) return false;
    const end = start + ns / 1e6;
    do {
      if (probe()) {
        if (this.counters !== undefined) this.counters.array[this.counters.hits]++;
        return true;
      }
    } while (performance.now() < end);
    if (this.counters !== undefined) this.counters.array[this.counters.misses]++;
    return false;
  }

  /** Ends a wait started by `run()` that had to block: adjusts pollNs by the time since run() began. */
  blocked(): void {
    this.adjust((performance.now() - this.startMs) * 1e6);
  }

  /**
   * QEMU's rule, with blockNs the whole wait (polling included): within pollNs
   * is the sweet spot; beyond pollMaxNs polling would not have paid, so stop;
   * otherwise polling longer would have caught it, so grow.
   */
  adjust(blockNs: number): void {
    const max = this.pollMaxNs;
    if (max === 0 || blockNs <= this.pollNs) return;
    if (blockNs > max) {
      this.pollNs = 0;
    } else if (this.pollNs < max) {
      const next = this.pollNs === 0 ? POLL_INITIAL_NS : this.pollNs * POLL_GROW;
      this.pollNs = next > max ? max : next;
    }
    if (this.counters !== undefined) this.counters.array[this.counters.pollNs] = this.pollNs;
  }
}
