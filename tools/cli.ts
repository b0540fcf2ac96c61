/**
 * The `ublk` command line, in the conventions of ublksrv's `ublk` and rublk.
 * Every failure is one line on stderr (`ublk: add: …`) and exit code 1.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { UBLK_MAX_NR_QUEUES, UBLK_MAX_QUEUE_DEPTH } from '../ublk/uapi.js';
import { CliError, MAX_DEV_ID } from './cli-util.js';
import { describeError } from './errors.js';

/** Commander argument parser for an integer in [min, max]. */
function intArg(name: string, min: number, max: number): (v: string) => number {
  return (v: string) => {
    if (!/^-?\d+$/.test(v.trim())) throw new InvalidArgumentError(`${name} must be an integer, not '${v}'`);
    const n = Number(v);
    if (n < min || n > max) throw new InvalidArgumentError(`${name} must be between ${min} and ${max}, not ${n}`);
    return n;
  };
}

// Each command's module is imported when it runs, so that a start-up loads
// only what that command needs (the daemon's modules only for add and
// recover): module loading is most of a short command's time, e.g. in the
// test VM's emulator.
function program(run: (name: string, action: () => Promise<number>) => void): Command {
  const p = new Command('ublk')
    .description('userspace block devices served by Node.js (ublk)')
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, outputError: () => undefined });

  p.command('add')
    .description('create a device and start the daemon that serves it; returns once it is live')
    .addOption(new Option('-t, --type <target>', 'target: loop, qcow2, nbd, rbd, null, mem, or the path of a target module').makeOptionMandatory())
    .option('-f, --file <file>', 'backing file or block device (loop), image (qcow2)')
    .option('-s, --size <size>', 'device size, e.g. 512, 4K, 256M, 1G (null, mem)')
    .option('--url <uri>', 'NBD server: nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH (nbd)')
    .option('--timeout <seconds>', 'fail IO with EIO when the NBD server (nbd; 0: wait for ever) or a Ceph OSD (rbd) has not answered for SECONDS; default 30', intArg('timeout', 0, 3600))
    .option('--reconnect', 'when the NBD connection fails, hold IO and reconnect instead of failing it (nbd)')
    .option('--image <pool/image>', 'Ceph RBD image (rbd)')
    .option('--conf <file>', 'Ceph configuration (rbd; default $CEPH_CONF, else /etc/ceph/ceph.conf)')
    .option('--id <name>', "Ceph client id, without 'client.' (rbd; default admin)")
    .option('--keyring <file>', 'Ceph keyring (rbd; default: the configuration says)')
    .option('-q, --queues <n>', 'hardware queues, one worker thread each', intArg('queues', 1, UBLK_MAX_NR_QUEUES), 1)
    .option('-d, --depth <n>', 'queue depth (tags per queue)', intArg('depth', 1, UBLK_MAX_QUEUE_DEPTH), 128)
    .option('-n, --number <id>', 'device id (default: the first free one)', intArg('device id', 0, MAX_DEV_ID), -1)
    .option('--max-io-size <size>', 'largest request and per-tag buffer', '512K')
    .addOption(new Option('--engine <engine>', 'how the loop target issues IO').choices(['aio', 'uring']))
    .option('--read-only', 'expose the device read-only')
    .option('--raw', 'serve a file that looks like a disk image (qcow2, VMDK ...) as raw bytes (loop)')
    .option('--poll-max-ns <ns>', 'adaptive polling before blocking, up to NS nanoseconds (0: off)', intArg('poll-max-ns', 0, 1e9))
    .option('--scheduler <name>', "IO scheduler of the block device (none: as the kernel loop driver; 'kernel': the kernel's choice)", 'none')
    .option('--recoverable', 'keep the device (IO waits) when the daemon dies, for `ublk recover`')
    .option('--unprivileged', 'as a user without root: a device owned by the user (needs ublk install-udev-rules)')
    .option('--foreground', 'serve from this process; SIGINT/SIGTERM stop and delete the device')
    .option('--json', 'print the device as JSON')
    .option('--save <name>', 'also save the options as NAME: `ublk up NAME` starts the device again, /dev/disk/by-ublk/NAME names it')
    .addHelpText('after', '\nExamples:\n  ublk add -t loop -f disk.img -q 2\n  ublk add -t qcow2 -f vm.qcow2 -q 2\n  ublk add -t nbd --url nbd://localhost/disk -q 2\n  ublk add -t rbd --image rbd/disk1 -q 2\n  ublk add -t null -s 1G --json')
    .action((o) => run('add', async () => (await import('./commands/add.js')).add(o)));

  p.command('list')
    .description('list devices: state, queues, depth, size, daemon, target')
    .option('-n, --number <id>', 'only this device', intArg('device id', 0, MAX_DEV_ID))
    .option('--json', 'print JSON')
    .action((o) => run('list', async () => (await import('./commands/list.js')).list(o)));

  p.command('del')
    .description('stop and delete a device (in-flight IO completes first)')
    .option('-n, --number <id>', 'device id', intArg('device id', 0, MAX_DEV_ID))
    .option('-a, --all', 'every device')
    .action((o) => run('del', async () => (await import('./commands/del.js')).del(o)));

  p.command('recover')
    .description('start a new daemon for a --recoverable device whose daemon died; its IO resumes')
    .addOption(new Option('-n, --number <id>', 'device id').argParser(intArg('device id', 0, MAX_DEV_ID)).makeOptionMandatory())
    .option('--foreground', 'serve from this process')
    .option('--json', 'print the device as JSON')
    .action((o) => run('recover', async () => (await import('./commands/recover.js')).recover(o)));

  p.command('save')
    .description('save the options of a running device as NAME, for `ublk up NAME`')
    .addOption(new Option('-n, --number <id>', 'device id').argParser(intArg('device id', 0, MAX_DEV_ID)).makeOptionMandatory())
    .argument('<name>', 'the name: letters, digits, _ . -')
    .option('--force', 'replace a saved device of that name')
    .action((name: string, o) => run('save', async () => (await import('./commands/saved.js')).save({ ...o, name })));

  p.command('up')
    .description('start saved devices (see add --save); one that is up already is left as it is')
    .argument('[names...]', 'saved device names')
    .option('-a, --all', 'every saved device')
    .option('--foreground', 'serve the one named device from this process (systemd: ublk-ts@.service)')
    .option('--json', 'print the devices as JSON')
    .action((names: string[], o) => run('up', async () => (await import('./commands/saved.js')).up({ ...o, names })));

  p.command('down')
    .description('stop and delete saved devices that are up (their saved options stay)')
    .argument('[names...]', 'saved device names')
    .option('-a, --all', 'every saved device')
    .action((names: string[], o) => run('down', async () => (await import('./commands/saved.js')).down({ ...o, names })));

  p.command('install-units')
    .description('install the systemd unit ublk-ts@.service, which starts a saved device: systemctl enable --now ublk-ts@NAME')
    .option('--dir <dir>', 'where systemd finds units', '/etc/systemd/system')
    .action((o) => run('install-units', async () => (await import('./commands/units.js')).installUnits(o)));

  p.command('install-udev-rules')
    .description('install the udev rule that lets users add --unprivileged devices and hands those to them')
    .option('--dir <dir>', 'where udev finds rules', '/etc/udev/rules.d')
    .action((o) => run('install-udev-rules', async () => (await import('./commands/units.js')).installUdevRules(o)));

  p.command('udev-handover <name>', { hidden: true })
    .description("udev's RUN for ublk nodes: give an unprivileged device's node to its owner")
    .action((name: string) => run('udev-handover', async () => (await import('./commands/units.js')).udevHandover({ name })));

  p.command('features')
    .description("print the kernel driver's features")
    .option('--json', 'print JSON')
    .action((o) => run('features', async () => (await import('./commands/features.js')).features(o)));

  p.command('stats')
    .description("print a device's IO statistics, per queue and in total")
    .addOption(new Option('-n, --number <id>', 'device id').argParser(intArg('device id', 0, MAX_DEV_ID)).makeOptionMandatory())
    .option('--json', 'print JSON')
    .option('--prometheus', 'print the Prometheus text format (node_exporter textfile collector)')
    .option('--watch <seconds>', 'print again every SECONDS (on a terminal: redraw in place)', intArg('seconds', 1, 3600))
    .action((o) => run('stats', async () => (await import('./commands/stats.js')).stats(o)));

  p.command('help [command]')
    .description('show help for a command')
    .action((name?: string) => {
      const sub = name ? p.commands.find((c) => c.name() === name) : undefined;
      if (name && !sub) throw new CliError(`unknown command '${name}'`);
      (sub ?? p).outputHelp();
    });
  return p;
}

export async function main(argv: string[]): Promise<void> {
  // `ublk list | head`: a closed pipe ends the output, not the process with a stack.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
  let command = '';
  let pending: Promise<number> | null = null;
  const p = program((name, action) => {
    command = name;
    pending = action();
  });
  p.configureOutput({ writeOut: (s) => process.stdout.write(s), writeErr: () => undefined, outputError: () => undefined });
  if (argv.length === 0) {
    process.stdout.write(p.helpInformation());
    return;
  }
  try {
    await p.parseAsync(argv, { from: 'user' });
    if (pending) process.exitCode = await pending;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version') return;
      const sub = argv.find((a) => !a.startsWith('-'));
      const where = sub && p.commands.some((c) => c.name() === sub) ? `${sub}: ` : '';
      // "option '-d, --depth <n>' argument '0' is invalid. depth must be …": keep the reason.
      const message = e.message
        .replace(/^error: /, '')
        .replace(/^option '(?:-\w, )?(--[\w-]+)[^']*' argument '([^']*)' is invalid\. Allowed choices are (.*)\.$/, "$1 must be one of $3, not '$2'")
        .replace(/^option .* is invalid\. /, '');
      process.stderr.write(`ublk: ${where}${message}\n`);
      process.exitCode = 1;
      return;
    }
    const where = command ? `${command}: ` : '';
    process.stderr.write(`ublk: ${where}${describeError(e)}\n`);
    process.exitCode = e instanceof CliError ? e.exitCode : 1;
  }
}
