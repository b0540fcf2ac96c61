/**
 * bench-ceph (issue 18): the ublk-ts rbd target against the kernel's rbd
 * client (`rbd map`) on the same image of one single-node cluster
 * (tests/ceph/cluster, started by bench/ceph/run), in one run. The image is
 * written in full first (through the kernel client: a read of an object
 * never written is answered without touching the OSD's store), then every
 * workload runs both clients back to back, --rounds times; a client is
 * attached for its line only (the image is mapped, or the ublk-ts device
 * added, then removed), so neither holds the image's exclusive lock while
 * the other runs. Both get 2 hardware queues (krbd has one per CPU) and the
 * scheduler none. A third line per workload drives librbd with fio's rbd
 * engine (no block device, no ublk): what the library costs by itself, with
 * librbd's cache off. Under fio's rbd engine librbd has counted two flushes
 * by the time the writes run (its perf counters), and the first flush turns
 * the cache's write-around on (librbd answers writes before the OSD has
 * them); the ublk-ts device gets no flush in the bench and krbd has no such
 * cache, so their writes wait for the OSD: with the cache off so do librbd's.
 * Prints the table and last:
 *   ublk-ts rbd / kernel rbd 4k randread QD32 IOPS ratio: <x.xx>
 *
 *   node dist/bench/ceph/main.js --conf CONF [--seconds 15] [--ramp 8] [--rounds 2] [--size-mib 512]
 *        [--workloads randread-4k-qd32,read-128k-qd8]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { run } from '../ublk/exec.js';
import { type Workload, median, rateOf, runFio } from '../ublk/fio.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const UBLK = join(root, 'bin/ublk');
const IMAGE = 'rbd/bench';
const QUEUES = 2;

const { values } = parseArgs({
  options: {
    conf: { type: 'string' },
    seconds: { type: 'string', default: '15' },
    ramp: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '2' },
    'size-mib': { type: 'string', default: '512' },
    workloads: { type: 'string' },
  },
});
if (values.conf === undefined) throw new Error('--conf CONF is required (the cluster bench/ceph/run started)');
const conf = values.conf;
const seconds = Number(values.seconds);
const ramp = Number(values.ramp);
const rounds = Number(values.rounds);
const sizeMiB = Number(values['size-mib']);
const say = (s: string): void => void process.stderr.write(`bench-ceph: ${s}\n`);

const HEADLINE = 'randread-4k-qd32';
const allWorkloads: Workload[] = [
  { key: HEADLINE, label: '4k randread QD32', rw: 'randread', bs: '4k', qd: 32, jobs: 1, bandwidth: false },
  { key: 'randread-4k-qd1', label: '4k randread QD1', rw: 'randread', bs: '4k', qd: 1, jobs: 1, bandwidth: false },
  { key: 'randwrite-4k-qd32', label: '4k randwrite QD32', rw: 'randwrite', bs: '4k', qd: 32, jobs: 1, bandwidth: false },
  { key: 'read-128k-qd8', label: '128k seq read QD8', rw: 'read', bs: '128k', qd: 8, jobs: 1, bandwidth: true },
];
const workloads = values.workloads === undefined ? allWorkloads : allWorkloads.filter((w) => values.workloads!.split(',').includes(w.key));
if (!workloads.some((w) => w.key === HEADLINE)) throw new Error(`--workloads must include ${HEADLINE}, the headline`);

/** A client attached to the image: fio's arguments for it, and how to take it down. */
interface Attached {
  fio: string[];
  /** The Ceph configuration fio's own librbd reads (CEPH_CONF), when it is not the cluster's. */
  cephConf?: string;
  detach(): void;
}

interface Client {
  key: 'krbd' | 'ublk' | 'librbd';
  label: string;
  attach(): Attached;
}

const rbd = (...args: string[]): string => run('rbd', ['-c', conf, ...args]).trim();

/** The cluster's configuration with librbd's cache off, for the librbd line (see the header). */
const noCacheConf = join(dirname(conf), 'bench-no-cache.conf');
writeFileSync(noCacheConf, `${readFileSync(conf, 'utf8')}\n[client]\nrbd cache = false\n`);

/** fio on block device `dev` (scheduler none, as ublk-ts sets it), taken down by `detach`. */
const blockDevice = (dev: string, detach: (dev: string) => void): Attached => {
  writeFileSync(`/sys/block/${basename(dev)}/queue/scheduler`, 'none');
  return { fio: [`--filename=${dev}`, '--ioengine=libaio', '--direct=1'], detach: () => detach(dev) };
};

const clients: Client[] = [
  {
    key: 'krbd',
    label: 'kernel rbd (rbd map)',
    // noudev: the VM runs no udev, which `rbd map` would otherwise wait for.
    attach: () => blockDevice(rbd('device', 'map', '-o', 'noudev', IMAGE), (dev) => void rbd('device', 'unmap', '-o', 'noudev', dev)),
  },
  {
    key: 'ublk',
    label: `ublk-ts rbd (${QUEUES} queues)`,
    attach() {
      const out = run(process.execPath, [UBLK, 'add', '-t', 'rbd', '--image', IMAGE, '--conf', conf, '-q', String(QUEUES), '--json']);
      const { id, blockDevice: dev } = JSON.parse(out) as { id: number; blockDevice: string };
      return blockDevice(dev, () => void run(process.execPath, [UBLK, 'del', '-n', String(id)]));
    },
  },
  {
    // librbd without a block device: what the library costs on its own,
    // writing through as the other two do (see the header).
    key: 'librbd',
    label: 'fio rbd, librbd no cache',
    attach: () => ({
      fio: ['--ioengine=rbd', `--pool=${IMAGE.split('/')[0]}`, `--rbdname=${IMAGE.split('/')[1]}`, '--clientname=admin'],
      cephConf: noCacheConf,
      detach: () => undefined,
    }),
  },
];

/** The unit a workload's rate is in (rateOf). */
const unit = (w: Workload): string => (w.bandwidth ? 'MB/s' : 'IOPS');

function line(c: Client, w: Workload): number {
  const a = c.attach();
  try {
    // CEPH_CONF: the fio rbd engine's librados finds the cluster there.
    return rateOf(runFio(w, a.fio, { seconds, ramp }, { ...process.env, CEPH_CONF: a.cephConf ?? conf }), w);
  } finally {
    a.detach();
  }
}

const started = Date.now();
rbd('create', '--size', `${sizeMiB}M`, IMAGE);
say(`writing the ${sizeMiB} MiB image through the kernel client`);
{
  const krbd = clients[0].attach();
  run('fio', ['--name=prefill', ...krbd.fio, '--rw=write', '--bs=1M', '--iodepth=8', '--output-format=json']);
  krbd.detach();
}

const rates = new Map<string, number[]>();
const ratios = new Map<string, number[]>();
for (const w of workloads) {
  for (let r = 0; r < rounds; r++) {
    const got: Record<string, number> = {};
    for (const c of clients) {
      got[c.key] = line(c, w);
      rates.set(`${w.key}/${c.key}`, [...(rates.get(`${w.key}/${c.key}`) ?? []), got[c.key]]);
      say(`${w.label}, ${c.label}, round ${r + 1}: ${got[c.key].toFixed(0)} ${unit(w)}`);
    }
    for (const c of clients) if (c.key !== 'krbd') ratios.set(`${w.key}/${c.key}`, [...(ratios.get(`${w.key}/${c.key}`) ?? []), got[c.key] / got.krbd]);
  }
}

const out: string[] = [];
out.push(`rbd image ${IMAGE}, ${sizeMiB} MiB, one monitor and one BlueStore OSD on this machine; fio libaio O_DIRECT, ${seconds} s + ${ramp} s ramp, median of ${rounds} rounds`);
out.push(`${'workload'.padEnd(22)}${'client'.padEnd(26)}${'rate'.padStart(10)}   ratio to kernel rbd (each round)`);
for (const w of workloads) {
  for (const c of clients) {
    const xs = rates.get(`${w.key}/${c.key}`)!;
    const rs = ratios.get(`${w.key}/${c.key}`);
    const ratio = rs === undefined ? '' : `${median(rs).toFixed(2)} (${rs.map((x) => x.toFixed(2)).join(', ')})`;
    out.push(`${w.label.padEnd(22)}${c.label.padEnd(26)}${median(xs).toFixed(0).padStart(10)} ${unit(w)}  ${ratio}`);
  }
}
out.push(`bench time ${((Date.now() - started) / 60000).toFixed(1)} min`);
out.push(`ublk-ts rbd / kernel rbd 4k randread QD32 IOPS ratio: ${median(ratios.get(`${HEADLINE}/ublk`)!).toFixed(2)}`);
process.stdout.write(out.join('\n') + '\n');
