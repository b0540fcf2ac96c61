/**
 * AIO engine statistics in a SharedArrayBuffer: the queue worker (the one
 * writer) does plain Float64Array increments, and any thread that holds the
 * buffer reads them without a message round trip. Readers may see a value a
 * few increments old; each counter is one aligned 8-byte word, so never torn
 * on x86_64.
 */

import type { PollCounters } from '../sys/poller.js';

/** Counter slots. */
export const enum Counter {
  IOS = 0, // IOs completed (onComplete calls)
  BYTES, // bytes transferred by completed IOs
  ERRORS, // IOs completed with -errno
  SUBMITS, // io_submit calls
  SUBMITTED, // iocbs accepted by io_submit
  EAGAINS, // io_submit calls that returned -EAGAIN
  PARTIAL_SUBMITS, // io_submit calls that took only part of the batch
  SHORT_IOS, // reads/writes that completed with fewer bytes than asked
  REAPS, // looks at the ring (or io_getevents calls) that found completions
  EMPTY_REAPS, // looks that found none
  GETEVENTS, // io_getevents calls
  POLL_HITS, // adaptive polls that found work
  POLL_MISSES, // adaptive polls that timed out
  POLL_NS, // the poller's current poll time
  COUNT,
}

/**
 * Completions-per-reap histogram, as seed 000 counts them: how many events
 * one look at the ring (or one io_getevents) found. Exact buckets
 * 1..HIST_MAX, then one overflow bucket.
 */
export const HIST_MAX = 4096;

/** Seed 000's percentiles of completions per reap. */
export const REAP_PERCENTILES = [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99.99] as const;

export interface AioStatsSnapshot {
  ios: number;
  bytes: number;
  errors: number;
  submits: number;
  submitted: number;
  eagains: number;
  partialSubmits: number;
  shortIos: number;
  reaps: number;
  emptyReaps: number;
  getevents: number;
  pollHits: number;
  pollMisses: number;
  pollNs: number;
  /** completions per reap at REAP_PERCENTILES (HIST_MAX + 1 means "more than HIST_MAX") */
  reapPercentiles: number[];
}

export class AioStats {
  readonly buffer: SharedArrayBuffer;
  /** Counter slots, indexed by Counter. */
  readonly c: Float64Array;
  /** hist[n] = reaps that returned n completions (1 ≤ n ≤ HIST_MAX); hist[HIST_MAX + 1] = more. */
  readonly hist: Float64Array;

  /** A new set of counters, or a view of one another thread created (`stats.buffer`). */
  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer((Counter.COUNT + HIST_MAX + 2) * 8);
    this.c = new Float64Array(this.buffer, 0, Counter.COUNT);
    this.hist = new Float64Array(this.buffer, Counter.COUNT * 8, HIST_MAX + 2);
  }

  /** Records one look at the ring (or one io_getevents) that found n completions. */
  reaped(n: number): void {
    if (n === 0) {
      this.c[Counter.EMPTY_REAPS]++;
      return;
    }
    this.c[Counter.REAPS]++;
    this.hist[n > HIST_MAX ? HIST_MAX + 1 : n]++;
  }

  /** The slots where an AdaptivePoller (sys/poller.ts) counts for this engine. */
  pollCounters(): PollCounters {
    return { array: this.c, hits: Counter.POLL_HITS, misses: Counter.POLL_MISSES, pollNs: Counter.POLL_NS };
  }

  reset(): void {
    this.c.fill(0);
    this.hist.fill(0);
  }

  /** Completions per reap at each percentile `ps` (seed 000's by default); 0 when nothing was reaped. */
  percentiles(ps: readonly number[] = REAP_PERCENTILES): number[] {
    return histogramPercentiles(this.hist, ps);
  }

  snapshot(): AioStatsSnapshot {
    const c = this.c;
    return {
      ios: c[Counter.IOS],
      bytes: c[Counter.BYTES],
      errors: c[Counter.ERRORS],
      submits: c[Counter.SUBMITS],
      submitted: c[Counter.SUBMITTED],
      eagains: c[Counter.EAGAINS],
      partialSubmits: c[Counter.PARTIAL_SUBMITS],
      shortIos: c[Counter.SHORT_IOS],
      reaps: c[Counter.REAPS],
      emptyReaps: c[Counter.EMPTY_REAPS],
      getevents: c[Counter.GETEVENTS],
      pollHits: c[Counter.POLL_HITS],
      pollMisses: c[Counter.POLL_MISSES],
      pollNs: c[Counter.POLL_NS],
      reapPercentiles: this.percentiles(),
    };
  }
}

/**
 * For each percentile p, the smallest bucket index k with
 * sum(hist[0..k]) ≥ p% of the total (nearest rank). 0 for an empty histogram.
 */
export function histogramPercentiles(hist: ArrayLike<number>, ps: readonly number[]): number[] {
  let total = 0;
  for (let i = 0; i < hist.length; i++) total += hist[i];
  return ps.map((p) => {
    if (total === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * total));
    let seen = 0;
    for (let i = 0; i < hist.length; i++) {
      seen += hist[i];
      if (seen >= rank) return i;
    }
    return hist.length - 1;
  });
}
