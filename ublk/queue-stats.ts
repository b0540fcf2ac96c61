/**
 * Per-queue counters in a SharedArrayBuffer: the queue's worker is the one
 * writer (plain stores, no atomics on the IO path), the daemon's main
 * thread reads them for `ublk stats` without messages.
 */
export const QUEUE_STAT_NAMES = [
  'reads',
  'writes',
  'flushes',
  'discards',
  'writeZeroes',
  'otherOps',
  'readBytes',
  'writeBytes',
  'discardBytes',
  'writeZeroesBytes',
  'errors',
  'shortIos',
  'inFlight',
  'enters',
  'waits',
  'pollHits',
  'pollMisses',
  'pollNs',
] as const;

export type QueueStatName = (typeof QUEUE_STAT_NAMES)[number];

export const QS: Readonly<Record<QueueStatName, number>> = Object.fromEntries(
  QUEUE_STAT_NAMES.map((n, i) => [n, i]),
) as Record<QueueStatName, number>;

export function newQueueStats(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(QUEUE_STAT_NAMES.length * 8));
}

export function readQueueStats(s: Float64Array): Record<QueueStatName, number> {
  return Object.fromEntries(QUEUE_STAT_NAMES.map((n, i) => [n, s[i]])) as Record<QueueStatName, number>;
}

/**
 * The sum over queues of each counter in `names` (QUEUE_STAT_NAMES, or a
 * target's per-queue counters such as the AIO ones); pollNs, a setting and
 * not a count, is the largest. A counter a queue lacks (a daemon of another
 * version, as `ublk stats` reads it) counts 0.
 */
export function sumQueueStats<N extends string>(queues: readonly Partial<Record<N, number>>[], names: readonly N[]): Record<N, number> {
  const t = {} as Record<N, number>;
  for (const n of names) {
    t[n] = n === 'pollNs' ? Math.max(0, ...queues.map((q) => q[n] ?? 0)) : queues.reduce<number>((s, q) => s + (q[n] ?? 0), 0);
  }
  return t;
}
