// Issue 19: a user without root adds, uses and deletes a device of their
// own (UBLK_F_UNPRIVILEGED_DEV), with the udev rule `ublk install-udev-rules`
// writes handing its nodes over. Neither the VM nor the host it shares has
// udev (Debian's udev package would start udevd on the host), so the test
// plays udevd for this one rule: it applies the rule's MODE to
// /dev/ublk-control and runs the rule's RUN, %k substituted, once for each
// new /dev/ublk[bc]N, from a separate process as udevd would.
import t from 'tap';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, background, processAlive, sh, snapshot, ublk, ublkAsNobody, waitFor } from '../lib/ublk.js';

const NOBODY = 65534;
const node = process.execPath;

/** A command line as uid `uid` (gid the same), without root's groups. */
function asUser(uid: number, script: string) {
  return sh(`setpriv --reuid=${uid} --regid=${uid} --clear-groups bash -c ${JSON.stringify(script)}`);
}

function owner(path: string): string {
  const s = statSync(path);
  return `${s.uid}:${s.gid} ${(s.mode & 0o777).toString(8)}`;
}

/** Installs the rule and starts playing udevd for it; returns what stops it. */
function playUdev(): () => void {
  const dir = mkdtempSync('/tmp/udev-rules-');
  const r = ublk('install-udev-rules', '--dir', dir);
  if (r.code !== 0) throw new Error(`install-udev-rules: ${r.stderr}`);
  const rules = readFileSync(join(dir, '99-ublk-ts.rules'), 'utf8');
  const mode = /^KERNEL=="ublk-control", MODE="(\d+)"/m.exec(rules)?.[1];
  const run = /^ACTION=="add", KERNEL=="ublk\[bc\]\[0-9\]\*", RUN\+="([^"]+)"$/m.exec(rules)?.[1];
  if (mode === undefined || run === undefined) throw new Error(`unexpected rules:\n${rules}`);
  sh(`chmod ${mode} /dev/ublk-control`);
  // A node seen once gets RUN once; a name whose node went away may come again.
  const loop = `seen=" "; while :; do now=" "; for n in /dev/ublk[bc][0-9]*; do [ -e "$n" ] || continue; k=\${n#/dev/}; now="$now$k "; case "$seen" in *" $k "*) ;; *) ${run.replace('%k', '$k')} & ;; esac; done; seen=$now; sleep 0.05; done`;
  const udevd = background('bash', ['-c', loop]);
  return () => {
    process.kill(udevd.pid, 'SIGKILL');
    sh('chmod 0600 /dev/ublk-control');
  };
}

t.teardown(() => {
  sh(`for p in $(pgrep -u ${NOBODY} -f ublk-daemon); do kill $p; done`);
  sh('chmod 0600 /dev/ublk-control');
  ublk('del', '-a');
});

t.test('a user adds, uses and deletes a device of their own', async (t) => {
  const before = snapshot();
  const stopUdev = playUdev();
  t.teardown(stopUdev);
  t.equal(owner('/dev/ublk-control'), '0:0 666', 'the rule lets users open /dev/ublk-control');

  const add = ublkAsNobody('add', '--unprivileged', '-t', 'mem', '-s', '64M', '--json');
  t.equal(add.code, 0, `add --unprivileged as nobody: ${add.stderr}`);
  const dev = JSON.parse(add.stdout || '{}') as { id: number; pid: number; unprivileged?: boolean };
  t.equal(dev.unprivileged, true);
  t.equal(owner(`/dev/ublkc${dev.id}`), `${NOBODY}:${NOBODY} 600`, 'udev gave the char device to its owner');
  t.equal(statSync(`/dev/ublkb${dev.id}`).uid, NOBODY, 'and the block device');

  const io = asUser(NOBODY, `cd /tmp && head -c 8M /dev/urandom > /tmp/u.bin && dd if=/tmp/u.bin of=/dev/ublkb${dev.id} bs=1M oflag=direct status=none && cmp -n 8388608 /tmp/u.bin /dev/ublkb${dev.id}`);
  t.equal(io.code, 0, `the owner writes and reads it back: ${io.stderr}`);
  t.match(ublkAsNobody('list').stdout, new RegExp(`^${dev.id} +- +LIVE`, 'm'), "the owner's list shows it");
  t.match(ublkAsNobody('stats', '-n', String(dev.id)).stdout, /^writes +\d+/m, 'and its stats');
  t.match(JSON.parse(ublk('list', '-n', String(dev.id), '--json').stdout), [{ state: 'LIVE', flags: /UNPRIVILEGED_DEV/ }], 'root lists it, unprivileged');
  t.match(JSON.parse(ublk('list', '--json').stdout), [{ id: dev.id, state: 'LIVE' }], 'among all devices too');

  // Another user may neither open nor delete it.
  t.not(asUser(NOBODY - 1, `dd if=/dev/ublkb${dev.id} of=/dev/null bs=4k count=1 status=none`).code, 0, 'another user cannot read it');
  const other = asUser(NOBODY - 1, `${node} ${BIN} del -n ${dev.id}`);
  t.equal(other.code, 1, 'nor delete it');
  t.match(other.stderr, /must be run as root/);

  const del = ublkAsNobody('del', '-n', String(dev.id));
  t.equal(del.code, 0, `the owner deletes it: ${del.stderr}`);
  t.ok(await waitFor(() => !processAlive(dev.pid), 10_000), 'its daemon is gone');
  t.same(snapshot(), before, 'nothing is left');
});

t.test('refused: one line, exit 1, nothing left', async (t) => {
  const before = snapshot();
  const cases: [ReturnType<typeof ublk>, string][] = [
    [ublkAsNobody('add', '--unprivileged', '-t', 'mem', '-s', '64M'), "ublk: add: /dev/ublk-control: Permission denied (a user's --unprivileged devices need udev's rule: ublk install-udev-rules; others need root)\n"],
    [ublkAsNobody('add', '--unprivileged', '--recoverable', '-t', 'mem', '-s', '64M'), 'ublk: add: an --unprivileged device cannot be --recoverable (ublk_drv does not recover them)\n'],
    [ublk('add', '--unprivileged', '-t', 'mem', '-s', '64M'), "ublk: add: --unprivileged is for users without CAP_SYS_ADMIN (root's devices are privileged)\n"],
  ];
  for (const [r, line] of cases) {
    t.equal(r.code, 1);
    t.equal(r.stderr, line);
  }
  t.same(snapshot(), before, 'nothing is left');
});

t.test('when nothing hands the nodes over, the user hears why and root can delete the device', async (t) => {
  sh('chmod 0666 /dev/ublk-control'); // the control node open to users, but no udev to give them their devices
  t.teardown(() => sh('chmod 0600 /dev/ublk-control'));
  const r = ublkAsNobody('add', '--unprivileged', '-t', 'mem', '-s', '64M');
  t.equal(r.code, 1);
  const m = /^ublk: add: \/dev\/ublkc(\d+) was not given to uid 65534 within 10 s: unprivileged devices need udev's rule \(ublk install-udev-rules\); device (\d+) is left \(DEL_DEV: Permission denied\): root can delete it with ublk del -n (\d+)\n$/.exec(r.stderr);
  t.ok(m, `one line that says why and what is left: ${r.stderr}`);
  t.equal(ublk('del', '-n', m?.[1] ?? '0').code, 0, 'root deletes it');
  t.notOk(statSafe(`/dev/ublkc${m?.[1]}`), 'it is gone');
});

function statSafe(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}
