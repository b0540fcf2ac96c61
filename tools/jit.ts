/**
 * The daemon process's V8 tiering. V8 optimizes a function once it has
 * spent a budget of executed bytecode (--interrupt-budget, 66 KiB a tick
 * in Node 20's V8, three ticks). A queue's request path is many small
 * functions, each run a few times per request, so at a few hundred
 * requests a second (128k reads on a slow CPU) it ran unoptimized, with
 * TurboFan compiling it piece by piece, for the first 15 s and more of a
 * device's life. Measured in the VM (6.12, TCG, nbd target, 128k seq read
 * QD8), compiles in the 8 s after the first 3000 requests, two rounds:
 * 4 and 10 (0.4 and 1.1 s of TurboFan) with the default budget, 2 and 1
 * (0.08 and 0.04 s) with 8 KiB.
 *
 * Only the daemon process (the detached one, or `ublk add --foreground`)
 * sets it: V8 flags are the whole process's, and a program that calls
 * createDevice() keeps its own. It is set before the queue threads start:
 * set after a worker thread had loaded its code, it did not change when
 * that code was optimized (tried with Node 20).
 */
import { setFlagsFromString } from 'node:v8';

const DAEMON_INTERRUPT_BUDGET = 8 * 1024;

export function tuneDaemonJit(): void {
  setFlagsFromString(`--interrupt-budget=${DAEMON_INTERRUPT_BUDGET}`);
}
