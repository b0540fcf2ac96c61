/**
 * Entry of the detached daemon that `ublk add` starts: options as JSON in
 * argv[2]; the result goes to the readiness pipe on fd 3 as one JSON line.
 * The file name is how `ublk del` recognises a daemon's pid (state.ts).
 */
import { closeSync, writeSync } from 'node:fs';
import { startSpareWorkers } from '../ublk/spare-workers.js';
import type { DaemonOptions } from './daemon.js';
import { tuneDaemonJit } from './jit.js';

const READY_FD = 3;

function report(message: unknown): void {
  try {
    writeSync(READY_FD, JSON.stringify(message) + '\n');
    closeSync(READY_FD);
  } catch {
    // `ublk add` is gone; the device lives on regardless
  }
}

const options = JSON.parse(process.argv[2]) as DaemonOptions;
tuneDaemonJit(); // before any queue thread starts
// The queue threads load their modules while this thread loads the daemon's (spare-workers.ts).
startSpareWorkers(options.queues, options.targetModule);
const { runDaemon } = await import('./daemon.js');
runDaemon(options, { ready: report }).then(
  (code) => process.exit(code),
  (e: unknown) => {
    report({ error: String(e) });
    process.exit(1);
  },
);
