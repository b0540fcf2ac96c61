import { TargetError } from './target.js';

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/**
 * '512', '4K', '1G', '1.5G' (binary units, optional 'iB'/'B') or a number of
 * bytes → bytes. The result must be a positive multiple of 512.
 */
export function parseSize(v: number | string, what = 'size'): number {
  let bytes: number;
  if (typeof v === 'number') {
    bytes = v;
  } else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(v);
    if (!m) throw new TargetError(`${what} '${v}' is not a size (examples: 512, 4K, 256M, 1G)`);
    bytes = Math.round(Number(m[1]) * UNITS[m[2].toUpperCase()]);
  }
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new TargetError(`${what} must be more than 0 bytes`);
  if (bytes % 512 !== 0) throw new TargetError(`${what} ${bytes} is not a multiple of 512 bytes`);
  return bytes;
}
