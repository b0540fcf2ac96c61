/** The AIO engine's counters, as the targets that use it report them. */
import { AioStats, HIST_MAX, REAP_PERCENTILES, histogramPercentiles } from '../aio/stats.js';

/** What `ublk stats` shows of targets on kernel AIO (loop, qcow2): each queue's AIO counters and the completions per reap of all. */
export function aioStats(buffers: (SharedArrayBuffer | null)[]): Record<string, unknown> {
  const queues = buffers.map((b) => (b === null ? null : new AioStats(b)));
  const all = new Float64Array(HIST_MAX + 2);
  for (const q of queues) if (q !== null) for (let i = 0; i < all.length; i++) all[i] += q.hist[i];
  const percentiles = histogramPercentiles(all, REAP_PERCENTILES);
  return {
    aio: queues.map((q) => q?.snapshot() ?? null),
    reapPercentiles: Object.fromEntries(REAP_PERCENTILES.map((p, i) => [p, percentiles[i]])),
  };
}
