/**
 * The calling thread's name (its comm: what `top -H`, `ps -L` and perf
 * show). Node names no worker thread, so every queue would read "node".
 */
import { writeFileSync } from 'node:fs';

/** The kernel keeps 15 bytes of a thread's name (TASK_COMM_LEN 16, NUL included). */
export const THREAD_NAME_MAX = 15;

/**
 * Names the calling thread, cut to THREAD_NAME_MAX bytes. Best effort: the
 * name is for people looking at the process, so without /proc it is skipped.
 */
export function setThreadName(name: string): void {
  try {
    // Node's fs calls run on the calling thread, so thread-self is this one.
    writeFileSync('/proc/thread-self/comm', Buffer.from(name).subarray(0, THREAD_NAME_MAX));
  } catch {
    // no /proc mounted: keep the inherited name
  }
}
