// tests/tap-count.mjs, which makes the suite's closing line: every test counts,
// skipped files too; and tests/tap-run.mjs, whose output it reads.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from '../lib/ublk.js';

function count(tap: string): string {
  const r = spawnSync(process.execPath, [join(ROOT, 'tests/tap-count.mjs')], { input: tap, encoding: 'utf8' });
  return r.stdout.trim();
}

t.test('subtests count one each; a file skipped whole counts as one skipped; a crashed file as one failed', async (t) => {
  const tap = [
    'TAP version 14',
    '1..4',
    '# Subtest: dist/tests/host/a.test.js',
    '    ok 1 - first',
    '    ok 2 - second # SKIP needs a disk',
    '    not ok 3 - third',
    'not ok 1 - dist/tests/host/a.test.js # time=10ms',
    '# Subtest: dist/tests/host/aio-engine.test.js',
    '    1..0 # no filesystem here enforces O_DIRECT alignment',
    'ok 2 - dist/tests/host/aio-engine.test.js # SKIP no filesystem here enforces O_DIRECT alignment',
    '# Subtest: dist/tests/host/crash.test.js',
    '    ok 1 - before the crash',
    'not ok 3 - dist/tests/host/crash.test.js # time=3ms',
    '# Subtest: dist/tests/host/b.test.js',
    '    ok 1 - only',
    'ok 4 - dist/tests/host/b.test.js # time=1ms',
  ].join('\n');
  t.equal(count(tap), '3 2 2', 'passed failed skipped');
});

t.test('tap-run: a hung file fails at its timeout, a crashed one fails, a skipped one is skipped', async (t) => {
  const fixture = (name: string) => join(ROOT, 'dist/tests/fixtures/tap-run', `${name}.js`);
  const r = spawnSync(process.execPath, [join(ROOT, 'tests/tap-run.mjs'), '--timeout=1', ...['passes', 'skipped', 'hangs', 'crashes'].map(fixture)], {
    encoding: 'utf8',
  });
  t.equal(r.status, 1, 'exits 1: files failed');
  t.match(r.stdout, /^# \{ total: 4, pass: 2, fail: 2 \}$/m, 'its closing summary counts files');
  t.match(r.stdout, /^ok 2 - \S+skipped\.js # SKIP nothing to test here$/m, 'the skipped file says why');
  t.equal(count(r.stdout), '3 2 1', 'passed failed skipped: the hung test and the crashed file fail');
});
