/** How the CLI shows numbers. */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1 && v % 1024 === 0) {
    v /= 1024;
    u++;
  }
  if (u === 0 && bytes >= 1024) {
    // not a round binary size: one decimal of the best unit
    while (v >= 1024 && u < units.length - 1) {
      v /= 1024;
      u++;
    }
    return `${v.toFixed(1)} ${units[u]}`;
  }
  return `${v} ${units[u]}`;
}

/**
 * A latency in µs with its unit, to 3 significant digits: `85µs`, `1.28ms`,
 * `2.1s`; null (no requests) is `-`, Infinity (the last bucket) is `>4290s`.
 */
export function formatLatency(us: number | null): string {
  if (us === null) return '-';
  if (us === Infinity) return `>${formatLatency(2 ** 32)}`;
  const [v, unit] = us < 1e3 ? [us, 'µs'] : us < 1e6 ? [us / 1e3, 'ms'] : [us / 1e6, 's'];
  return `${Number(v.toPrecision(3))}${unit}`;
}

export const STATE_NAMES: Record<number, string> = { 0: 'DEAD', 1: 'LIVE', 2: 'QUIESCED', 3: 'FAIL_IO' };

/** Plain table with a header row, columns padded to their widest cell. */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ')).join('\n');
}
