/** Running the bench's tools, blocking: the bench does one thing at a time. */
import { execFileSync } from 'node:child_process';

/** Runs `cmd` to its end and returns its stdout; on failure, an Error saying `label` and what the tool said on stderr. */
export function run(cmd: string, args: string[], label = `${cmd} ${args.join(' ')}`): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${label}: ${(err.stderr ?? '').trim() || err.message}`);
  }
}

/** `tool` is on the PATH. */
export function hasTool(tool: string): boolean {
  try {
    execFileSync('which', [tool], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Why a tool is missing ('' when it is there): `no TOOL (why)`. */
export const missingTool = (tool: string, why: string): string => (hasTool(tool) ? '' : `no ${tool} (${why})`);

/** Sleeps `s` seconds, blocking this thread (children are then not reaped). */
export const sleepSync = (s: number): void => void execFileSync('sleep', [String(s)]);
