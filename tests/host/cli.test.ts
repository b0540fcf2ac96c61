// The CLI where there is no ublk_drv (the build machines), and what needs no driver at all.
import t from 'tap';
import { existsSync } from 'node:fs';
import { BIN, sh, ublk } from '../lib/ublk.js';

const hasDriver = existsSync('/dev/ublk-control');

t.test('without ublk_drv: one line naming /dev/ublk-control and modprobe, exit 1', { skip: hasDriver && 'this kernel has ublk_drv (the VM tests cover it)' }, async (t) => {
  for (const args of [['features'], ['features', '--json'], ['list'], ['add', '-t', 'null', '-s', '1G'], ['del', '-n', '0']]) {
    const r = ublk(...args);
    t.equal(r.code, 1, `ublk ${args.join(' ')} exits 1`);
    t.equal(r.stderr, `ublk: ${args[0]}: /dev/ublk-control: No such file or directory (is ublk_drv loaded? try: modprobe ublk_drv)\n`);
    t.equal(r.stdout, '');
  }
});

t.test('ublk --help and help COMMAND describe every command', async (t) => {
  const r = ublk('--help');
  t.equal(r.code, 0);
  for (const c of ['add', 'list', 'del', 'recover', 'save', 'up', 'down', 'install-units', 'install-udev-rules', 'features', 'stats']) t.match(r.stdout, new RegExp(`^  ${c}\\b`, 'm'), `--help lists ${c}`);
  const add = ublk('help', 'add');
  t.equal(add.code, 0);
  for (const o of ['--type', '--file', '--size', '--queues', '--depth', '--number', '--max-io-size', '--engine', '--read-only', '--poll-max-ns', '--scheduler', '--recoverable', '--foreground', '--json']) {
    t.match(add.stdout, o, `add --help documents ${o}`);
  }
  t.same(ublk('add', '--help').stdout, add.stdout);
  t.equal(ublk().code, 0, 'no arguments prints help');
});

t.test('bad arguments are refused before anything else, in one line', async (t) => {
  const cases: [string[], string][] = [
    [['add', '-t', 'null', '-s', '1000'], 'ublk: add: size 1000 is not a multiple of 512 bytes\n'],
    [['add', '-t', 'null', '-s', '1G', '-q', 'two'], "ublk: add: queues must be an integer, not 'two'\n"],
    [['add', '-t', 'null', '-s', '1G', '--max-io-size', '6K'], 'ublk: add: max IO size must be a multiple of 4K between 4K and 32M, not 6K\n'],
    [['add', '-t', 'loop', '-f', 'x', '--engine', 'nvme'], "ublk: add: --engine must be one of aio, uring, not 'nvme'\n"],
    [['add', '-t', 'null', '-s', '1G', '--scheduler', '../x'], "ublk: add: scheduler must be a name such as none or mq-deadline, not '../x'\n"],
    [['add', '-s', '1G'], "ublk: add: required option '-t, --type <target>' not specified\n"],
    [['frobnicate'], "ublk: unknown command 'frobnicate'\n"],
    [['help', 'frobnicate'], "ublk: unknown command 'frobnicate'\n"],
    [['del'], 'ublk: del: say which device: -n ID, or -a for all\n'],
    [['stats'], "ublk: stats: required option '-n, --number <id>' not specified\n"],
    [['stats', '-n', '0', '--json', '--prometheus'], 'ublk: stats: --json and --prometheus cannot be used together\n'],
  ];
  for (const [args, line] of cases) {
    const r = ublk(...args);
    t.equal(r.code, 1, `ublk ${args.join(' ')} exits 1`);
    t.equal(r.stderr, line);
  }
});

t.test('on another architecture than x86_64: one line, exit 1, before any system call', async (t) => {
  const arm = "data:text/javascript,Object.defineProperty(process,'arch',{value:'arm64'})";
  for (const args of [['features'], ['add', '-t', 'null', '-s', '1G']]) {
    const r = sh(`${JSON.stringify(process.execPath)} --import "${arm}" ${JSON.stringify(BIN)} ${args.join(' ')}`);
    t.equal(r.code, 1, `ublk ${args.join(' ')} exits 1`);
    t.equal(r.stderr, "ublk: ublk-ts runs on x86_64 only (its syscall numbers are x86_64's), not on arm64\n");
  }
});
