/**
 * Where saved devices live: <config>/devices/NAME.json (config: /etc/ublk-ts,
 * or $UBLK_TS_CONFIG_DIR). Apart from tools/saved.ts, which checks the files
 * against `ublk add`'s options, so that `ublk list` can name the saved
 * devices without loading add's modules.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

export function configDir(): string {
  return process.env.UBLK_TS_CONFIG_DIR ?? '/etc/ublk-ts';
}
export function savedDir(): string {
  return join(configDir(), 'devices');
}
export function savedPath(name: string): string {
  return join(savedDir(), `${name}.json`);
}

/** Names of the saved devices, sorted. */
export function savedNames(): string[] {
  try {
    return readdirSync(savedDir())
      .map((f) => /^(.+)\.json$/.exec(f)?.[1])
      .filter((n): n is string => n !== undefined)
      .sort();
  } catch {
    return [];
  }
}
