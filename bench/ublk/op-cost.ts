/**
 * ns per operation of the things a request does in the daemon's JavaScript,
 * to weigh a change before making it: `node dist/bench/ublk/op-cost.js`
 * [calls], on the host or in the VM (tests/vm/ublk-env run -- node …), where
 * QEMU's TCG prices them very differently (docs/request-cost.md). Each case
 * is its own loop, run once to warm up and then three times, the fastest
 * counting; a case that does k operations per iteration is divided by k.
 */
import { createServer } from 'node:net';
import { performance } from 'node:perf_hooks';
import { unlinkSync } from 'node:fs';
import { NativeMemory } from '../../sys/memory.js';
import * as native from '../../sys/native.js';
import { MSG_DONTWAIT, connectStream } from '../../sys/socket.js';
import { table } from '../../tools/format.js';

const CALLS = Number(process.argv[2] ?? 200_000);
const a = NativeMemory.aligned(1 << 20, 4096);
const b = NativeMemory.aligned(1 << 20, 4096);
const u32 = new Uint32Array(a.buffer);
const i32 = new Int32Array(64);
const f64 = new Float64Array(new SharedArrayBuffer(64 * 8)); // as the queue's stats
const dv = new DataView(a.buffer);
const src4k = new Uint8Array(a.buffer, 65536, 4096);
const dst = new Uint8Array(b.buffer);

// A connected unix socket with nothing to read: recv(MSG_DONTWAIT) answers EAGAIN.
const path = `/tmp/ublk-op-cost.${process.pid}.sock`;
const server = createServer();
await new Promise<void>((resolve) => server.listen(path, resolve));
const accepted = new Promise((resolve) => server.once('connection', resolve));
const sock = connectStream({ path }, 1000);
await accepted;

interface Case {
  name: string;
  /** Operations per iteration. */
  per: number;
  run(n: number): number;
}

const cases: Case[] = [
  {
    name: 'Int32Array element ++',
    per: 8,
    run: (n) => {
      for (let i = 0; i < n; i++) for (let j = 0; j < 8; j++) i32[j]++;
      return i32[0];
    },
  },
  {
    name: 'Float64Array (shared) element ++',
    per: 8,
    run: (n) => {
      for (let i = 0; i < n; i++) for (let j = 0; j < 8; j++) f64[j]++;
      return f64[0];
    },
  },
  {
    name: 'u64 from two u32 (hi * 2^32 + lo)',
    per: 8,
    run: (n) => {
      let s = 0;
      for (let i = 0; i < n; i++) for (let j = 0; j < 8; j++) s += u32[j] * 0x100000000 + u32[j + 1];
      return s;
    },
  },
  {
    name: 'Math.floor(x / 2^32)',
    per: 1,
    run: (n) => {
      let s = 0;
      for (let i = 0; i < n; i++) s += Math.floor((i * 1000) / 0x100000000);
      return s;
    },
  },
  {
    name: 'DataView getUint32 (big-endian)',
    per: 8,
    run: (n) => {
      let s = 0;
      for (let i = 0; i < n; i++) for (let j = 0; j < 8; j++) s = (s + dv.getUint32(j * 4)) | 0;
      return s;
    },
  },
  {
    name: 'Atomics.load',
    per: 1,
    run: (n) => {
      let s = 0;
      for (let i = 0; i < n; i++) s = (s + Atomics.load(u32, i & 7)) | 0;
      return s;
    },
  },
  {
    name: 'Atomics.store',
    per: 1,
    run: (n) => {
      for (let i = 0; i < n; i++) Atomics.store(u32, 8 + (i & 7), i);
      return 0;
    },
  },
  {
    name: 'performance.now()',
    per: 1,
    run: (n) => {
      let s = 0;
      for (let i = 0; i < n; i++) s += performance.now();
      return s;
    },
  },
  {
    name: 'koffi call: memcpy 64 B',
    per: 1,
    run: (n) => {
      for (let i = 0; i < n; i++) native.memcpy(b.addr + (i & 63) * 64, a.addr + 65536, 64);
      return 0;
    },
  },
  {
    name: 'koffi call: memcpy 4 KiB',
    per: 1,
    run: (n) => {
      for (let i = 0; i < n; i++) native.memcpy(b.addr + (i & 63) * 4096, a.addr + 65536, 4096);
      return 0;
    },
  },
  {
    name: 'Uint8Array copyWithin() 4 KiB (V8 builtin)',
    per: 1,
    run: (n) => {
      for (let i = 0; i < n; i++) dst.copyWithin((i & 63) * 4096, 4 * 65536, 4 * 65536 + 4096);
      return 0;
    },
  },
  {
    name: 'Uint8Array set() 4 KiB (V8 builtin)',
    per: 1,
    run: (n) => {
      for (let i = 0; i < n; i++) dst.set(src4k, (i & 63) * 4096);
      return 0;
    },
  },
  {
    name: 'koffi call + syscall: recv EAGAIN',
    per: 0.1, // a tenth of the calls: a syscall is slow
    run: (n) => {
      for (let i = 0; i < n / 10; i++) native.recvAt(sock, b.addr, 4096, MSG_DONTWAIT);
      return 0;
    },
  },
];

const rows: string[][] = [];
for (const c of cases) {
  c.run(CALLS); // to optimized code first
  let ns = Infinity;
  for (let round = 0; round < 3; round++) {
    const t = performance.now();
    c.run(CALLS);
    ns = Math.min(ns, ((performance.now() - t) * 1e6) / CALLS / c.per);
  }
  rows.push([c.name, ns.toFixed(1).padStart(9)]);
}
process.stdout.write(table([['per operation', '       ns'], ...rows]) + '\n');

native.close(sock);
server.close();
try {
  unlinkSync(path);
} catch {
  // the server's close removed it
}
a.free();
b.free();
