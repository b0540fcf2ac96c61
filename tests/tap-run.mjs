#!/usr/bin/env node
// Runs tap test files one after another, each with plain `node`, and prints
// their TAP the way tap's runner does: each file a subtest of the run
// ("ok N - FILE"), its own output indented under it, and a closing
// "# { total: N, pass: N, fail: N }" (files) that tests/tap-count.mjs and
// run-all read.
//
// Why not `tap`'s runner: it starts every test with
// --import=@tapjs/processinfo and puts that flag in NODE_OPTIONS, so every
// node process a test starts (each `ublk` command, each daemon, each queue
// worker) loads those hooks too: a node start-up takes about 2.5 times as
// long, which under the VM's TCG is many seconds each time.
//
//   node tests/tap-run.mjs [--timeout=S] [--grep=PATTERN]... FILE...
//
// --timeout bounds each file (default 1200 s): tap ends it with a "timeout!"
// failure, and a minute later its process group is killed. --grep is tap's (TAP_GREP), for picking subtests by name.
// Exits 1 when a file failed.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

let timeoutS = 1200;
const greps = [];
const files = [];
for (const a of process.argv.slice(2)) {
  let m;
  if ((m = /^--timeout=(\d+)$/.exec(a))) timeoutS = Number(m[1]);
  else if ((m = /^--grep=(.*)$/.exec(a))) greps.push(m[1]);
  else if (a.startsWith('-')) {
    console.error(`tap-run: unknown option ${a}`);
    process.exit(2);
  } else files.push(a);
}

// tap itself bounds a file run without its runner at TAP_TIMEOUT (default 30 s).
const env = { ...process.env, TAP_TIMEOUT: String(timeoutS) };
if (greps.length > 0) env.TAP_GREP = greps.join('\n');
/** After tap's own timeout, how long before the file's process group is killed. */
const KILL_GRACE_S = 60;

/** Runs one file, copying its TAP indented; resolves with { ok, why (a failure's cause), skip (a skipped file's reason), ms }. */
function runFile(file) {
  return new Promise((resolve) => {
    const started = performance.now();
    // Its own process group, so a timeout stops what it started too.
    const child = spawn(process.execPath, ['--enable-source-maps', file], { stdio: ['ignore', 'pipe', 'inherit'], env, detached: true });
    let skipped = null;
    let timedOut = false;
    const kill = (signal) => {
      try {
        process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill('SIGTERM');
      setTimeout(() => kill('SIGKILL'), 10_000).unref();
    }, (timeoutS + KILL_GRACE_S) * 1000);
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      if (/^TAP version \d+$/.test(line)) return;
      const plan0 = /^1\.\.0(?: # (?:SKIP\S*\s*)?(.*))?$/.exec(line);
      if (plan0) skipped = plan0[1] ?? '';
      process.stdout.write(line === '' ? '\n' : `    ${line}\n`);
    });
    const linesDone = new Promise((r) => lines.on('close', r));
    child.on('close', async (code, signal) => {
      clearTimeout(timer);
      await linesDone;
      const ms = (performance.now() - started).toFixed(3);
      if (timedOut) resolve({ ok: false, why: `killed: it still ran ${KILL_GRACE_S} s after its ${timeoutS} s timeout`, ms });
      else if (code !== 0) resolve({ ok: false, why: signal ? `ended by ${signal}` : `exit code ${code}`, ms });
      else resolve({ ok: true, skip: skipped, ms });
    });
  });
}

const start = performance.now();
let pass = 0, fail = 0;
for (const [i, file] of files.entries()) {
  process.stdout.write(`# Subtest: ${file}\n`);
  const r = await runFile(file);
  if (r.ok) pass++;
  else fail++;
  const directive = r.skip != null ? `SKIP ${r.skip}` : `time=${r.ms}ms`;
  process.stdout.write(`${r.ok ? 'ok' : 'not ok'} ${i + 1} - ${file} # ${directive}\n`);
  if (!r.ok) process.stdout.write(`# ${file}: ${r.why}\n`);
  process.stdout.write('\n');
}
process.stdout.write(`1..${files.length}\n# { total: ${files.length}, pass: ${pass}, fail: ${fail} }\n`);
process.stdout.write(`# time=${(performance.now() - start).toFixed(3)}ms\n`);
process.exit(fail > 0 ? 1 : 0);
