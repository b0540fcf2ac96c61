// A qcow2 device's server killed with SIGKILL in the middle of writes and
// flushes (tests/lib/qcow2-writer-child.ts): `qemu-img check` must find no
// corruption (leaked clusters are allowed), and every write that a
// completed flush covered must read back. A dirty image (lazy refcounts)
// gets its refcounts rebuilt when it is opened again.
import t from 'tap';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import qcow2 from '../../target/qcow2/index.js';
import { BLOCK, blockWrite } from '../lib/qcow2-blocks.js';
import { TargetClient } from '../lib/target-client.js';

const dir = mkdtempSync('/var/tmp/ublk-qcow2-crash-');
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const child = fileURLToPath(new URL('../lib/qcow2-writer-child.js', import.meta.url));
const BLOCKS = 2048; // 8 MiB
/** Writes a run is assumed never to pass (the child does far fewer before it is killed). */
const MAX_WRITES = 1_000_000;

function qemuImg(...args: string[]): { code: number; out: string } {
  try {
    return { code: 0, out: execFileSync('qemu-img', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
  } catch (e) {
    const err = e as { status: number; stdout: string };
    return { code: err.status, out: err.stdout };
  }
}

/** Runs the child until it has printed `flushes` "flushed" lines, lets it go on for `ms`, kills it; the last flushed count. */
async function runAndKill(image: string, seed: number, flushes: number, ms: number): Promise<number> {
  const proc: ChildProcess = spawn(process.execPath, [child, image, String(seed), String(BLOCKS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let flushed = 0;
  let seen = 0;
  let buffered = '';
  await new Promise<void>((resolve, reject) => {
    proc.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`the writer exited by itself (${code ?? signal})`))));
    proc.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        const m = /^flushed (\d+)$/.exec(line);
        if (m === null) continue;
        flushed = Number(m[1]);
        if (++seen === flushes) setTimeout(() => proc.kill('SIGKILL'), ms);
      }
    });
  });
  // Lines written before the kill may still sit in the pipe.
  return flushed;
}

/**
 * Every block must hold, sector by sector, the last write a flush covered
 * (or zeros if none), or a later write of the same block.
 */
function verify(bytes: Buffer, seed: number, flushed: number): string[] {
  const required = new Int32Array(BLOCKS); // write number + 1, 0: none
  const later = new Map<number, Set<number>>();
  for (let i = 0; i < flushed; i++) required[blockWrite(seed, BLOCKS, i).block] = i + 1;
  for (let i = flushed; i < flushed + 20_000 && i < MAX_WRITES; i++) {
    const b = blockWrite(seed, BLOCKS, i).block;
    if (!later.has(b)) later.set(b, new Set());
    later.get(b)!.add(i + 1);
  }
  const errors: string[] = [];
  for (let b = 0; b < BLOCKS && errors.length < 5; b++) {
    for (let s = 0; s < BLOCK; s += 512) {
      const at = b * BLOCK + s;
      const version = bytes.readUInt32LE(at);
      let uniform = true;
      for (let w = 0; w < 512; w += 8) {
        if (bytes.readUInt32LE(at + w) !== version || (version !== 0 && bytes.readUInt32LE(at + w + 4) !== b)) uniform = false;
      }
      const ok = uniform && (version === required[b] || later.get(b)?.has(version) === true);
      if (!ok) errors.push(`block ${b} sector ${s / 512}: holds write ${version - 1}, must hold write ${required[b] - 1} or a later one`);
    }
  }
  return errors;
}

const cases: [string, string[], number][] = [
  ['an empty image', ['-f', 'qcow2'], 5],
  ['an image with lazy refcounts', ['-f', 'qcow2', '-o', 'lazy_refcounts=on'], 3],
  ['512 B clusters', ['-f', 'qcow2', '-o', 'cluster_size=512'], 2],
];

for (const [name, opts, rounds] of cases) {
  t.test(`killed while writing ${name}: no corruption, and what was flushed reads back`, async (t) => {
    for (let round = 0; round < rounds; round++) {
      const image = join(dir, `crash-${round}.qcow2`);
      execFileSync('qemu-img', ['create', '-q', ...opts, image, `${(BLOCKS * BLOCK) / 1024}K`]);
      const seed = 7 + round * 31 + name.length;
      const flushed = await runAndKill(image, seed, 1 + round, 15 + round * 50);
      t.ok(flushed > 0, `${name}, round ${round}: killed after ${flushed} flushed writes`);
      const lazy = opts.includes('lazy_refcounts=on');
      const first = qemuImg('check', image);
      // qemu-img check exits 0 (clean) or 3 (leaks only); 2 means corruption.
      if (!lazy) t.ok(first.code === 0 || first.code === 3, `${name}, round ${round}: qemu-img check: ${first.out.split('\n').find((l) => /error|leak|No errors/i.test(l)) ?? first.code}`);
      // Opened again: a dirty image is repaired, then served and closed cleanly.
      const c = await TargetClient.open(qcow2, { file: image });
      if (lazy) {
        // The header's dirty bit was set: qemu-img check counts its refcounts stale; opening rebuilt them.
        t.match(first.out, /dirty|refcount|Leaked|ERROR/i, `${name}, round ${round}: qemu-img check saw a dirty image (exit ${first.code})`);
        t.ok(c.device.warnings?.some((w) => /refcounts were rebuilt/.test(w)), `${name}, round ${round}: its refcounts were rebuilt`);
      }
      const seenByDevice = await c.read(0, BLOCKS * BLOCK);
      await c.close();
      const after = qemuImg('check', image);
      t.ok(after.code === 0 || after.code === 3, `${name}, round ${round}: qemu-img check after it was served again: exit ${after.code}`);
      t.notOk(after.out.includes('ERROR'), `${name}, round ${round}: no errors`);
      qemuImg('convert', '-O', 'raw', image, join(dir, 'crash.raw'));
      const raw = readFileSync(join(dir, 'crash.raw'));
      t.same(verify(raw, seed, flushed), [], `${name}, round ${round}: every flushed write is in the image`);
      t.ok(seenByDevice.equals(raw), `${name}, round ${round}: the device read what qemu-img reads`);
    }
  });
}
