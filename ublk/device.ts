/**
 * A ublk device served by this process: the lifecycle of design.md
 * ("Threads and processes") — ADD_DEV → SET_PARAMS → one worker per queue
 * fetches every tag → START_DEV → LIVE → STOP_DEV → workers drain and end →
 * /dev/ublkcN closed → DEL_DEV. Any failure on the way undoes what was done.
 */
import { EventEmitter } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import * as file from '../sys/file.js';
import { EventFd } from '../sys/eventfd.js';
import { loadTarget } from '../target/registry.js';
import { type Target, type TargetDescription, TargetError } from '../target/target.js';
import { type DevInfo, type Params } from './codec.js';
import { UblkCommandError, UblkControl } from './control.js';
import { newQueueStats } from './queue-stats.js';
import { QUEUE_STOP, type QueueOptions } from './queue.js';
import type { QueueWorkerData } from './queue-worker.js';
import * as U from './uapi.js';

export interface DeviceOptions {
  /** Module URL of the target (see target/registry.ts). */
  targetModule: string;
  targetOptions: Record<string, unknown>;
  /** -1: the kernel picks. */
  devId: number;
  queues: number;
  depth: number;
  /** Bytes per tag buffer and the largest request (max_io_buf_bytes). */
  maxIoSize: number;
  /** UBLK_F_USER_RECOVERY (+ REISSUE): IO waits for `ublk recover` when the daemon dies. */
  recoverable?: boolean;
  /** Adaptive polling cap of each queue before it blocks (0: off). */
  pollMaxNs?: number;
  /**
   * The IO scheduler of /dev/ublkbN, set once the device is live (see
   * setScheduler); KERNEL_SCHEDULER or undefined keeps the kernel's choice.
   */
  scheduler?: string;
}

/** `scheduler` value that keeps the elevator the kernel gave the disk. */
const KERNEL_SCHEDULER = 'kernel';

interface QueueHandle {
  worker: Worker;
  kick: EventFd;
  control: Int32Array;
  stats: Float64Array;
  targetStats: SharedArrayBuffer | null;
  exited: Promise<void>;
  error?: string;
}

const WORKER_URL = new URL('./queue-worker.js', import.meta.url);

export function paramsFor(desc: TargetDescription, maxIoSize: number): Params {
  const lbs = desc.logicalBlockSize ?? 512;
  const pbs = Math.max(desc.physicalBlockSize ?? 4096, lbs);
  let attrs = 0;
  if (desc.readOnly) attrs |= U.UBLK_ATTR_READ_ONLY;
  if (desc.rotational) attrs |= U.UBLK_ATTR_ROTATIONAL;
  if (desc.volatileCache) attrs |= U.UBLK_ATTR_VOLATILE_CACHE;
  if (desc.fua) attrs |= U.UBLK_ATTR_FUA;
  const params: Params = {
    basic: {
      attrs,
      logicalBsShift: Math.log2(lbs),
      physicalBsShift: Math.log2(pbs),
      ioOptShift: Math.log2(pbs),
      ioMinShift: Math.log2(lbs),
      maxSectors: maxIoSize / 512,
      chunkSectors: 0,
      devSectors: desc.size / 512,
      virtBoundaryMask: 0,
    },
  };
  if (desc.discard) {
    params.discard = {
      discardAlignment: 0,
      discardGranularity: desc.discard.granularity,
      maxDiscardSectors: desc.discard.maxDiscardSectors,
      maxWriteZeroesSectors: desc.discard.maxWriteZeroesSectors,
      maxDiscardSegments: 1,
    };
  }
  return params;
}

export function checkDescription(desc: TargetDescription): void {
  const lbs = desc.logicalBlockSize ?? 512;
  if (![512, 1024, 2048, 4096].includes(lbs)) throw new TargetError(`logical block size ${lbs} is not 512, 1024, 2048 or 4096`);
  if (!Number.isSafeInteger(desc.size) || desc.size <= 0) throw new TargetError('the device size must be more than 0 bytes');
  if (desc.size % lbs !== 0) throw new TargetError(`the device size ${desc.size} is not a multiple of the logical block size ${lbs}`);
}

/**
 * A live ublk device. Emits 'dead' (message) when a queue fails while
 * live: the device can then only be stopped.
 */
export class UblkDevice extends EventEmitter {
  readonly id: number;
  info: DevInfo;
  readonly description: TargetDescription;
  readonly options: DeviceOptions;
  private readonly ctrl: UblkControl;
  private readonly target: Target<never>;
  private readonly cdevFd: number;
  private readonly queues: QueueHandle[];
  private stopping: Promise<void> | null = null;

  private constructor(
    ctrl: UblkControl,
    target: Target<never>,
    options: DeviceOptions,
    description: TargetDescription,
    info: DevInfo,
    cdevFd: number,
    queues: QueueHandle[],
  ) {
    super();
    this.ctrl = ctrl;
    this.target = target;
    this.options = options;
    this.description = description;
    this.info = info;
    this.id = info.devId;
    this.cdevFd = cdevFd;
    this.queues = queues;
  }

  /** Creates and starts the device; on failure nothing is left in the kernel. */
  static async create(options: DeviceOptions, ctrl: UblkControl): Promise<UblkDevice> {
    const target = await loadTarget(options.targetModule);
    const description = await target.open(options.targetOptions as never);
    let dev: UblkDevice;
    try {
      checkDescription(description);
      let flags = U.UBLK_F_CMD_IOCTL_ENCODE;
      if (options.recoverable) flags |= U.UBLK_F_USER_RECOVERY | U.UBLK_F_USER_RECOVERY_REISSUE;
      const info = await ctrl.addDev({
        devId: options.devId,
        nrHwQueues: options.queues,
        queueDepth: options.depth,
        maxIoBufBytes: options.maxIoSize,
        flags,
      });
      try {
        await ctrl.setParams(info.devId, paramsFor(description, info.maxIoBufBytes));
        dev = await UblkDevice.serve(ctrl, target, options, description, info, (pid) => ctrl.startDev(info.devId, pid));
      } catch (e) {
        await ctrl.delDev(info.devId).catch(() => undefined);
        throw e;
      }
    } catch (e) {
      target.close?.();
      throw e;
    }
    if (options.scheduler !== undefined && options.scheduler !== KERNEL_SCHEDULER) {
      try {
        setScheduler(dev.id, options.scheduler);
      } catch (e) {
        await dev.stop().catch(() => undefined); // stop() closes the target too
        throw e;
      }
    }
    return dev;
  }

  /**
   * Takes over a QUIESCED device whose daemon died (UBLK_F_USER_RECOVERY):
   * START_USER_RECOVERY, every tag fetched again, END_USER_RECOVERY; the
   * kernel then reissues the IO it held and the device is LIVE again.
   */
  static async recover(options: DeviceOptions, ctrl: UblkControl): Promise<UblkDevice> {
    const id = options.devId;
    const target = await loadTarget(options.targetModule);
    const description = await target.open(options.targetOptions as never);
    try {
      checkDescription(description);
      const info = await ctrl.getDevInfo(id);
      if (!(info.flags & U.UBLK_F_USER_RECOVERY)) throw new TargetError(`device ${id} was not added with --recoverable`);
      const params = await ctrl.getParams(id);
      if (params.basic && params.basic.devSectors * 512 !== description.size) {
        throw new TargetError(`device ${id} has ${params.basic.devSectors * 512} bytes but its target now has ${description.size}`);
      }
      await startRecovery(ctrl, id);
      return await UblkDevice.serve(ctrl, target, options, description, info, (pid) => ctrl.endUserRecovery(id, pid));
    } catch (e) {
      target.close?.();
      throw e;
    }
  }

  /** Opens /dev/ublkcN, starts a worker per queue, and `go` (START_DEV or END_USER_RECOVERY) once all have fetched. */
  private static async serve(
    ctrl: UblkControl,
    target: Target<never>,
    options: DeviceOptions,
    description: TargetDescription,
    info: DevInfo,
    go: (pid: number) => Promise<void>,
  ): Promise<UblkDevice> {
    const id = info.devId;
    // The kernel may give fewer queues than asked (no more than CPUs) and rounds the buffer size to a page.
    const actual = { ...options, devId: id, queues: info.nrHwQueues, depth: info.queueDepth, maxIoSize: info.maxIoBufBytes };
    let cdevFd = -1;
    const queues: QueueHandle[] = [];
    try {
      cdevFd = await openCharDev(id);
      for (let q = 0; q < actual.queues; q++) queues.push(spawnQueue(actual, description, id, q, cdevFd));
      await Promise.all(queues.map(waitReady));
      const dev = new UblkDevice(ctrl, target, actual, description, info, cdevFd, queues);
      dev.watchQueues();
      // A queue that dies while the kernel waits for its fetches would leave it waiting forever.
      await Promise.race([go(process.pid), dev.firstQueueFailure()]);
      dev.info = await ctrl.getDevInfo(id);
      return dev;
    } catch (e) {
      await stopQueues(queues);
      if (cdevFd >= 0) file.close(cdevFd);
      throw e;
    }
  }

  private failure: Promise<never> | null = null;
  private firstQueueFailure(): Promise<never> {
    if (!this.failure) {
      this.failure = new Promise<never>((_, reject) => this.once('dead', (m: string) => reject(new Error(m))));
      this.failure.catch(() => undefined);
    }
    return this.failure;
  }

  private watchQueues(): void {
    for (const [q, h] of this.queues.entries()) {
      void h.exited.then(() => {
        if (this.stopping === null) this.emit('dead', h.error ?? `queue ${q} ended unexpectedly`);
      });
    }
  }

  /** Per-queue statistics (shared memory written by each worker). */
  queueStats(): Float64Array[] {
    return this.queues.map((h) => h.stats);
  }

  /** What the target makes of its queues' own counters (AIO statistics for loop). */
  targetStats(): Record<string, unknown> | null {
    return this.target.describeStats?.(this.queues.map((h) => h.targetStats)) ?? null;
  }

  /**
   * STOP_DEV (the kernel aborts the fetches once in-flight IO is completed),
   * waits for the workers, closes /dev/ublkcN and DEL_DEV. Idempotent.
   */
  stop(): Promise<void> {
    if (this.stopping === null) this.stopping = this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    let stopError: unknown = null;
    try {
      await this.ctrl.stopDev(this.id);
    } catch (e) {
      stopError = e;
    }
    const drained = Promise.all(this.queues.map((h) => h.exited));
    const timeout = new Promise<'timeout'>((r) => setTimeout(r, 10_000, 'timeout').unref());
    if ((await Promise.race([drained, timeout])) === 'timeout') await stopQueues(this.queues);
    file.close(this.cdevFd);
    await this.ctrl.delDev(this.id);
    this.target.close?.();
    if (stopError) throw stopError;
  }
}

/**
 * Writes the disk's IO scheduler (elevator). ublk_drv leaves a one-queue
 * disk to the kernel's default, mq-deadline, where the kernel loop driver
 * asks for none (BLK_MQ_F_NO_SCHED_BY_DEFAULT): the storage behind the
 * target schedules its own IO, and a second elevator in front of it costs
 * CPU per request and holds requests back from the queue's batch.
 */
function setScheduler(id: number, name: string): void {
  const path = `/sys/block/ublkb${id}/queue/scheduler`;
  try {
    writeFileSync(path, name);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
    let have = '';
    try {
      have = readFileSync(path, 'utf8').replace(/[[\]]/g, '').trim();
    } catch {
      // only the list in the message is lost
    }
    throw new Error(`IO scheduler '${name}' is not available for /dev/ublkb${id}${have ? ` (it has: ${have})` : ''}`);
  }
}

/** START_USER_RECOVERY, retried while the dead daemon's files are still being released (EBUSY). */
async function startRecovery(ctrl: UblkControl, id: number): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await ctrl.startUserRecovery(id);
      return;
    } catch (e) {
      if (!(e instanceof UblkCommandError && e.code === 'EBUSY') || i >= 100) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function openCharDev(id: number): Promise<number> {
  const path = `/dev/ublkc${id}`;
  // devtmpfs creates the node when ADD_DEV adds the char device; allow udev a moment.
  for (let i = 0; ; i++) {
    try {
      return file.open(path, file.O_RDWR);
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENOENT' || i >= 50) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

function spawnQueue(options: DeviceOptions, desc: TargetDescription, devId: number, qId: number, cdevFd: number): QueueHandle {
  const kick = new EventFd(0);
  const control = new Int32Array(new SharedArrayBuffer(4));
  const stats = newQueueStats();
  const queueOptions: QueueOptions = {
    devId,
    qId,
    depth: options.depth,
    maxIoSize: options.maxIoSize,
    cdevFd,
    kickFd: kick.fd,
    control,
    stats,
    pollMaxNs: options.pollMaxNs ?? 0,
  };
  const data: QueueWorkerData = { ...queueOptions, targetModule: options.targetModule, queueData: desc.queueData };
  const worker = new Worker(WORKER_URL, { workerData: data, name: `ublk${devId}q${qId}` });
  const h: QueueHandle = { worker, kick, control, stats, targetStats: null, exited: Promise.resolve() };
  h.exited = new Promise<void>((resolve) => {
    worker.on('message', (m: { type: string; message?: string }) => {
      if (m.type === 'error') h.error = `queue ${qId}: ${m.message}`;
    });
    worker.on('error', (e) => (h.error = `queue ${qId}: ${e.message}`));
    worker.on('exit', () => {
      kick.close();
      resolve();
    });
  });
  return h;
}

function waitReady(h: QueueHandle): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { type: string; message?: string; statsBuffer?: SharedArrayBuffer | null }) => {
      if (m.type === 'ready') {
        h.targetStats = m.statsBuffer ?? null;
        h.worker.off('message', onMessage);
        resolve();
      } else if (m.type === 'error') {
        reject(new Error(m.message));
      }
    };
    h.worker.on('message', onMessage);
    void h.exited.then(() => reject(new Error(h.error ?? 'a queue worker exited before it was ready')));
  });
}

/** Tells every worker to stop now (abandoning what the kernel still holds) and waits for them. */
async function stopQueues(queues: QueueHandle[]): Promise<void> {
  for (const h of queues) {
    Atomics.store(h.control, 0, QUEUE_STOP);
    try {
      h.kick.signal();
    } catch {
      // already closed: the worker is gone
    }
  }
  await Promise.all(queues.map((h) => h.exited));
}
