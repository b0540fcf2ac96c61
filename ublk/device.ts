/**
 * A ublk device served by this process: the lifecycle of design.md
 * ("Threads and processes") — ADD_DEV → SET_PARAMS → one worker per queue
 * fetches every tag (queue-pool.ts) → START_DEV → LIVE → STOP_DEV →
 * workers drain and end → /dev/ublkcN closed → DEL_DEV. Any failure on the
 * way undoes what was done, and every wait on the way out is bounded.
 */
import { accessSync, constants } from 'node:fs';
import * as file from '../sys/file.js';
import { loadTarget } from '../target/registry.js';
import { type TargetDevice, TargetError } from '../target/target.js';
import { type DevInfo } from './codec.js';
import { UblkCommandError, UblkControl, charDevPath } from './control.js';
import { checkDescription, paramsFor } from './params.js';
import { QueuePool, READY_TIMEOUT_MS, TIMEOUT, within } from './queue-pool.js';
import { KERNEL_SCHEDULER, setScheduler } from './scheduler.js';
import * as U from './uapi.js';

/**
 * Longest wait for in-flight IO to complete after STOP_DEV, and again for
 * the workers to end, before the queues are stopped by force (their held
 * requests fail with EIO); also the bound on DEL_DEV.
 */
export const DRAIN_TIMEOUT_MS = 10_000;

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
   * scheduler.ts); KERNEL_SCHEDULER or undefined keeps the kernel's choice.
   */
  scheduler?: string;
  /**
   * UBLK_F_UNPRIVILEGED_DEV: a device made by a user without CAP_SYS_ADMIN,
   * owned by that user. ublk_drv checks its commands against /dev/ublkcN's
   * permissions and opens /dev/ublkbN only to its owner (or root): udev
   * must hand both nodes to the owner (`ublk install-udev-rules`).
   */
  unprivileged?: boolean;
}

/** How long udev may take to hand an unprivileged device's nodes to its owner. */
export const HANDOVER_TIMEOUT_MS = 10_000;

/** Called once the target has opened and described the device, before the kernel hears of it; a throw refuses the device. */
export type OnOpen = (device: TargetDevice) => void | Promise<void>;

/** A live ublk device. */
export class UblkDevice {
  readonly id: number;
  info: DevInfo;
  /** The target's instance for this device: its description, stats and close. */
  readonly target: TargetDevice;
  readonly options: DeviceOptions;
  /** Resolves with "queue N: reason" when a queue fails (see QueuePool.failed). */
  readonly failed: Promise<string>;
  private readonly ctrl: UblkControl;
  private readonly cdevFd: number;
  private readonly pool: QueuePool;
  private stopping: Promise<void> | null = null;

  private constructor(ctrl: UblkControl, target: TargetDevice, options: DeviceOptions, info: DevInfo, cdevFd: number, pool: QueuePool) {
    this.ctrl = ctrl;
    this.target = target;
    this.options = options;
    this.info = info;
    this.id = info.devId;
    this.cdevFd = cdevFd;
    this.pool = pool;
    this.failed = pool.failed;
  }

  /** Creates and starts the device; on failure nothing is left in the kernel and the target is closed. */
  static async create(options: DeviceOptions, ctrl: UblkControl, onOpen?: OnOpen): Promise<UblkDevice> {
    const device = await openTarget(options);
    let dev: UblkDevice;
    try {
      await onOpen?.(device);
      let flags = U.UBLK_F_CMD_IOCTL_ENCODE;
      if (options.recoverable) flags |= U.UBLK_F_USER_RECOVERY | U.UBLK_F_USER_RECOVERY_REISSUE;
      if (options.unprivileged) flags |= U.UBLK_F_UNPRIVILEGED_DEV;
      const info = await ctrl.addDev({
        devId: options.devId,
        nrHwQueues: queuesFor(device, options.queues),
        queueDepth: options.depth,
        maxIoBufBytes: Math.min(options.maxIoSize, device.maxIoSize ?? Infinity),
        flags,
      });
      try {
        // ublk_drv checks an unprivileged device's every command against /dev/ublkcN: it must be ours first.
        if (options.unprivileged) await handedOver(charDevPath(info.devId));
        await ctrl.setParams(info.devId, paramsFor(device, info.maxIoBufBytes));
        dev = await UblkDevice.serve(ctrl, device, options, info, 'START_DEV', (pid) => ctrl.startDev(info.devId, pid));
      } catch (e) {
        const left = await ctrl.delDev(info.devId).then(
          () => null,
          (d: unknown) => d as Error,
        );
        // An unprivileged device whose /dev/ublkcN never became ours cannot be deleted by us.
        if (left !== null && options.unprivileged) {
          throw new Error(`${(e as Error).message}; device ${info.devId} is left (${left.message}): root can delete it with ublk del -n ${info.devId}`);
        }
        throw e;
      }
    } catch (e) {
      await closeQuietly(device);
      throw e;
    }
    // sysfs is root's: an unprivileged device keeps the kernel's scheduler.
    if (options.scheduler !== undefined && options.scheduler !== KERNEL_SCHEDULER && !options.unprivileged) {
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
  static async recover(options: DeviceOptions, ctrl: UblkControl, onOpen?: OnOpen): Promise<UblkDevice> {
    const id = options.devId;
    const device = await openTarget(options);
    try {
      await onOpen?.(device);
      const info = await ctrl.getDevInfo(id);
      if (!(info.flags & U.UBLK_F_USER_RECOVERY)) throw new TargetError(`device ${id} was not added with --recoverable`);
      const params = await ctrl.getParams(id);
      if (params.basic && params.basic.devSectors * 512 !== device.size) {
        throw new TargetError(`device ${id} has ${params.basic.devSectors * 512} bytes but its target now has ${device.size}`);
      }
      await startRecovery(ctrl, id);
      return await UblkDevice.serve(ctrl, device, options, info, 'END_USER_RECOVERY', (pid) => ctrl.endUserRecovery(id, pid));
    } catch (e) {
      await closeQuietly(device);
      throw e;
    }
  }

  /** Opens /dev/ublkcN, starts the queues, and `go` (START_DEV or END_USER_RECOVERY) once all have fetched. */
  private static async serve(
    ctrl: UblkControl,
    device: TargetDevice,
    options: DeviceOptions,
    info: DevInfo,
    goName: string,
    go: (pid: number) => Promise<void>,
  ): Promise<UblkDevice> {
    const id = info.devId;
    // The kernel may give fewer queues than asked (no more than CPUs) and rounds the buffer size to a page.
    const actual = { ...options, devId: id, queues: info.nrHwQueues, depth: info.queueDepth, maxIoSize: info.maxIoBufBytes };
    let cdevFd = -1;
    let pool: QueuePool | null = null;
    try {
      cdevFd = await openCharDev(id);
      const cpuMasks = await queueAffinities(ctrl, id, actual.queues);
      pool = await QueuePool.start({
        devId: id,
        queues: actual.queues,
        depth: actual.depth,
        maxIoSize: actual.maxIoSize,
        cdevFd,
        pollMaxNs: actual.pollMaxNs ?? 0,
        targetModule: actual.targetModule,
        queueData: device.queueData,
        cpuMasks,
      });
      // A queue that dies while the kernel waits for its fetches would leave it waiting forever.
      const r = await within(Promise.race([go(process.pid).then(() => null), pool.failed]), READY_TIMEOUT_MS);
      if (r === TIMEOUT) throw new Error(`${goName} of device ${id} did not complete within ${READY_TIMEOUT_MS / 1000} s`);
      if (r !== null) throw new Error(r);
      if (options.unprivileged) await handedOver(`/dev/ublkb${id}`);
      return new UblkDevice(ctrl, device, actual, await ctrl.getDevInfo(id), cdevFd, pool);
    } catch (e) {
      await pool?.stopNow().catch(() => undefined);
      if (cdevFd >= 0) file.close(cdevFd);
      throw e;
    }
  }

  /** Per-queue statistics (shared memory written by each worker). */
  queueStats(): Float64Array[] {
    return this.pool.stats();
  }

  /** Per-queue latency histograms (shared memory written by each worker; latency.ts). */
  queueLatency(): Float64Array[] {
    return this.pool.latency();
  }

  /** What the target makes of its queues' own counters (AIO statistics for loop). */
  targetStats(): Record<string, unknown> | null {
    return this.target.stats?.(this.pool.targetStats()) ?? null;
  }

  /**
   * STOP_DEV (the kernel completes what is in flight, removes the disk and
   * aborts the fetches), waits for the workers, closes /dev/ublkcN and
   * DEL_DEV, then closes the target. Each wait is bounded: queues that do
   * not drain are stopped by force. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutDown(true);
    return this.stopping;
  }

  /**
   * Stops serving at once and closes the target, but leaves the device in
   * the kernel, as the death of this process would: a recoverable device
   * waits QUIESCED for recoverDevice(); any other fails its IO until it is
   * deleted. Idempotent, and exclusive with stop().
   */
  detach(): Promise<void> {
    this.stopping ??= this.shutDown(false);
    return this.stopping;
  }

  private async shutDown(remove: boolean): Promise<void> {
    const errors: unknown[] = [];
    const pool = this.pool;
    pool.expectExit();
    let stopped = false;
    if (remove) {
      const stopDev = this.ctrl.stopDev(this.id).then(
        () => true,
        (e: unknown) => (errors.push(e), false),
      );
      stopped = (await within(stopDev, DRAIN_TIMEOUT_MS)) === true;
      if (!stopped || !(await pool.drained(DRAIN_TIMEOUT_MS))) {
        // Requests the target never finished hold STOP_DEV (and the workers) up: fail them.
        await pool.stopNow().catch((e: unknown) => errors.push(e));
        if (!stopped) stopped = (await within(stopDev, DRAIN_TIMEOUT_MS)) === true;
        if (!stopped && errors.length === 0) errors.push(new Error(`STOP_DEV of device ${this.id} did not complete within ${(2 * DRAIN_TIMEOUT_MS) / 1000} s`));
      }
    } else {
      await pool.stopNow().catch((e: unknown) => errors.push(e));
    }
    file.close(this.cdevFd);
    if (remove && stopped) {
      // DEL_DEV waits until every reference to /dev/ublkcN is gone: ours, and the queue rings'.
      const del = await within(this.ctrl.delDev(this.id).catch((e: unknown) => errors.push(e)), DRAIN_TIMEOUT_MS);
      if (del === TIMEOUT) errors.push(new Error(`DEL_DEV of device ${this.id} did not complete within ${DRAIN_TIMEOUT_MS / 1000} s`));
    }
    try {
      await this.target.close?.();
    } catch (e) {
      errors.push(e);
    }
    if (errors.length > 0) throw errors[0];
  }
}

/** Loads the target and opens this device's instance of it, checked. */
async function openTarget(options: DeviceOptions): Promise<TargetDevice> {
  const target = await loadTarget(options.targetModule);
  const device = await target.open(options.targetOptions as never);
  try {
    checkDescription(device);
  } catch (e) {
    await closeQuietly(device);
    throw e;
  }
  return device;
}

/** The queues asked for, or fewer when the target serves no more (the user is told why). */
function queuesFor(device: TargetDevice, asked: number): number {
  const limit = device.queueLimit;
  if (limit === undefined || asked <= limit.max) return asked;
  device.warnings = [...(device.warnings ?? []), `${limit.max} queue${limit.max === 1 ? '' : 's'}, not ${asked}: ${limit.reason}`];
  return limit.max;
}

/** Closes a target whose device could not be made: the reason that stopped it is the one to report. */
async function closeQuietly(device: TargetDevice): Promise<void> {
  try {
    await device.close?.();
  } catch {
    // the first error stands
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

/**
 * Waits until udev has given the node to this user (an unprivileged
 * device's /dev/ublkcN, then /dev/ublkbN); throws one line when it does not.
 */
async function handedOver(path: string): Promise<void> {
  const end = Date.now() + HANDOVER_TIMEOUT_MS;
  for (;;) {
    try {
      accessSync(path, constants.R_OK | constants.W_OK);
      return;
    } catch {
      if (Date.now() > end) {
        throw new Error(`${path} was not given to uid ${process.getuid?.()} within ${HANDOVER_TIMEOUT_MS / 1000} s: unprivileged devices need udev's rule (ublk install-udev-rules)`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/**
 * Each queue's CPUs (GET_QUEUE_AFFINITY), for its thread to run where blk-mq
 * issues its requests, as ublksrv does: the request's task work then wakes
 * a thread on the same CPU. A queue whose mask cannot be had runs anywhere.
 */
async function queueAffinities(ctrl: UblkControl, devId: number, queues: number): Promise<(Uint8Array | null)[]> {
  const masks: (Uint8Array | null)[] = [];
  for (let q = 0; q < queues; q++) masks.push(await ctrl.getQueueAffinity(devId, q).catch(() => null));
  return masks;
}
