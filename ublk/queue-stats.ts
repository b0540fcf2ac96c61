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

/** The sum of every counter over queues (pollNs: the largest). */
export function sumQueueStats(queues: Record<QueueStatName, number>[]): Record<QueueStatName, number> {
  const t = {} as Record<QueueStatName, number>;
  for (const n of QUEUE_STAT_NAMES) {
    t[n] = n === 'pollNs' ? Math.max(0, ...queues.map((q) => q[n])) : queues.reduce((s, q) => s + q[n], 0);
  }
  return t;
}
