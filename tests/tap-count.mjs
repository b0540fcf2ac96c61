#!/usr/bin/env node
// Counts tests in tap's TAP output (stdin): the subtests each test file
// declares (t.test at the top level of a file), not their assertions.
// A file that failed without a failing subtest (it crashed, timed out)
// counts as one failed test; a file skipped as a whole (t.plan(0, why))
// counts as one skipped test. Prints "passed failed skipped".
import { readFileSync } from 'node:fs';

const lines = readFileSync(0, 'utf8').split('\n');
let passed = 0, failed = 0, skipped = 0;
let fileTests = 0, fileFailures = 0;
for (const line of lines) {
  let m = /^    (ok|not ok) \d+ - .*?(?: # (SKIP|TODO)\b.*)?$/.exec(line);
  if (m) {
    fileTests++;
    if (m[2]) skipped++;
    else if (m[1] === 'ok') passed++;
    else { failed++; fileFailures++; }
    continue;
  }
  m = /^(ok|not ok) \d+ - \S+(.*)$/.exec(line);
  if (m) {
    if (m[1] === 'not ok' && fileFailures === 0) failed++;
    else if (/ # SKIP\b/.test(m[2]) && fileTests === 0) skipped++;
    fileTests = fileFailures = 0;
  }
}
process.stdout.write(`${passed} ${failed} ${skipped}\n`);
