/**
 * The public API: a ublk device served by this process from a target.
 * `ublk add` runs this same code in its daemon.
 */
import { type DevInfo } from './codec.js';
import { UblkControl } from './control.js';
import { UblkDevice, type DeviceOptions, type OnOpen } from './device.js';
import { type LatencyHistogram, type LatencyOp, readQueueLatency } from './latency.js';
import { QUEUE_STAT_NAMES, type QueueStatName, readQueueStats, sumQueueStats } from './queue-stats.js';
import { targetModuleUrl } from '../target/registry.js';
import type { TargetDevice } from '../target/target.js';
import { UBLK_S_DEV_DEAD, UBLK_S_DEV_FAIL_IO, UBLK_S_DEV_LIVE, UBLK_S_DEV_QUIESCED } from './uapi.js';

export interface CreateDeviceOptions {
  /**
   * The target: a built-in name (`'loop'`, `'null'`, `'mem'`), or the path
   * or `file:` URL of a module whose default export is a {@link Target}.
   * A module, because every queue's worker thread loads it too.
   */
  target: string | URL;
  /** Passed to the target's `open()`, e.g. `{ file: 'disk.img' }` for loop, `{ size: '1G' }` for mem. */
  targetOptions?: Record<string, unknown>;
  /** Device id; default: the first free one. */
  id?: number;
  /** Hardware queues, one worker thread each (default 1; the kernel caps it at the CPU count). */
  queues?: number;
  /** Tags per queue (default 128, at most 4096). */
  depth?: number;
  /** Largest request in bytes, a multiple of 4096 (default 512 KiB). */
  maxIoSize?: number;
  /** Keep the device (IO waits) if this process dies, for `ublk recover` (UBLK_F_USER_RECOVERY). */
  recoverable?: boolean;
  /** Adaptive polling of each queue before it blocks, up to this many ns (default 0: off). */
  pollMaxNs?: number;
  /**
   * IO scheduler of `/dev/ublkb<id>` (default `'none'`, as the kernel loop
   * driver: the target's own storage schedules); `'kernel'` keeps the
   * kernel's choice (mq-deadline for one queue). Not applied by recoverDevice():
   * the disk keeps its scheduler across a recovery.
   */
  scheduler?: string;
  /**
   * Create the device as this user, without CAP_SYS_ADMIN
   * (UBLK_F_UNPRIVILEGED_DEV): it is owned by the user, only the owner (and
   * root) may open it, it cannot be recoverable, and udev must hand its
   * nodes to the owner (`ublk install-udev-rules`).
   */
  unprivileged?: boolean;
  /**
   * Called once the target has opened and described the device, before the
   * kernel is asked for it: a throw (or a rejection) refuses the device,
   * and the target is closed again. `ublk add` checks here that no other
   * device holds what this one would hold exclusively.
   */
  onOpen?: OnOpen;
}

/** Kernel state of a device. */
export type DeviceStateName = 'DEAD' | 'LIVE' | 'QUIESCED' | 'FAIL_IO';

const STATE_NAMES: Record<number, DeviceStateName> = {
  [UBLK_S_DEV_DEAD]: 'DEAD',
  [UBLK_S_DEV_LIVE]: 'LIVE',
  [UBLK_S_DEV_QUIESCED]: 'QUIESCED',
  [UBLK_S_DEV_FAIL_IO]: 'FAIL_IO',
};

export interface DeviceInfo {
  id: number;
  /** `/dev/ublkb<id>` */
  path: string;
  queues: number;
  depth: number;
  maxIoSize: number;
  size: number;
  /** UBLK_F_* flags the kernel granted. */
  flags: number;
  /** What the target reported (backing file, engine…). */
  target: Record<string, string | number | boolean>;
}

export type QueueStats = Record<QueueStatName, number>;

export interface DeviceStats {
  /** Per queue: requests and bytes by op, in flight, errors, waits, polling. */
  queues: QueueStats[];
  total: QueueStats;
  /**
   * Per queue: request latency histograms by op class (WRITE_ZEROES counts
   * as discard); latency.ts has the buckets, mergeLatency() and
   * latencyPercentile().
   */
  latency: Record<LatencyOp, LatencyHistogram>[];
  /** The target's own statistics (loop: AIO counters and completions per reap). */
  target: Record<string, unknown> | null;
}

/** A live device. Keep the process alive while it serves; call stop() to remove it. */
export interface Device {
  readonly info: DeviceInfo;
  /** Warnings from the target (e.g. no O_DIRECT on the backing filesystem). */
  readonly warnings: readonly string[];
  /** Counters, read from shared memory without disturbing the queues. */
  stats(): DeviceStats;
  /** The kernel's view of the device now. */
  state(): Promise<DeviceStateName>;
  /**
   * Resolves with "queue N: reason" if a queue fails: it could not go on
   * (the kernel refused its ring, its target threw…), failed what it held
   * with EIO and ended. Call stop() (or detach()) then.
   */
  readonly failed: Promise<string>;
  /** Lets in-flight IO complete, stops and deletes the device. Idempotent; every wait in it is bounded. */
  stop(): Promise<void>;
  /**
   * Stops serving at once but leaves the device in the kernel, as if this
   * process had died: a `recoverable` device waits for recoverDevice(), any
   * other fails its IO until it is deleted (`ublk del`).
   */
  detach(): Promise<void>;
}

function deviceOptions(o: CreateDeviceOptions, recover: boolean): DeviceOptions {
  const target = o.target instanceof URL ? o.target.href : o.target;
  return {
    targetModule: targetModuleUrl(target),
    targetOptions: o.targetOptions ?? {},
    devId: o.id ?? -1,
    queues: o.queues ?? 1,
    depth: o.depth ?? 128,
    maxIoSize: o.maxIoSize ?? 512 * 1024,
    recoverable: recover || o.recoverable === true,
    pollMaxNs: o.pollMaxNs ?? 0,
    scheduler: recover ? undefined : o.scheduler ?? 'none',
    unprivileged: o.unprivileged === true,
  };
}

function describe(dev: UblkDevice, desc: TargetDevice, info: DevInfo): DeviceInfo {
  return {
    id: dev.id,
    path: `/dev/ublkb${dev.id}`,
    queues: info.nrHwQueues,
    depth: info.queueDepth,
    maxIoSize: info.maxIoBufBytes,
    size: desc.size,
    flags: info.flags,
    target: desc.info ?? {},
  };
}

function wrap(dev: UblkDevice, ctrl: UblkControl): Device {
  let stopped: Promise<void> | null = null;
  return {
    info: describe(dev, dev.target, dev.info),
    warnings: dev.target.warnings ?? [],
    failed: dev.failed,
    stats() {
      const queues = dev.queueStats().map(readQueueStats);
      return { queues, total: sumQueueStats(queues, QUEUE_STAT_NAMES), latency: dev.queueLatency().map(readQueueLatency), target: dev.targetStats() };
    },
    async state() {
      return STATE_NAMES[(await ctrl.getDevInfo(dev.id)).state] ?? 'DEAD';
    },
    stop() {
      stopped ??= dev.stop().finally(() => ctrl.close());
      return stopped;
    },
    detach() {
      stopped ??= dev.detach().finally(() => ctrl.close());
      return stopped;
    },
  };
}

async function open(options: DeviceOptions, recover: boolean, onOpen: OnOpen | undefined): Promise<Device> {
  const ctrl = UblkControl.open();
  try {
    const dev = recover ? await UblkDevice.recover(options, ctrl, onOpen) : await UblkDevice.create(options, ctrl, onOpen);
    return wrap(dev, ctrl);
  } catch (e) {
    ctrl.close();
    throw e;
  }
}

/**
 * Creates a ublk device served by `options.target` from this process and
 * resolves once `/dev/ublkb<id>` is live. Needs root and ublk_drv. On
 * failure nothing is left behind and the error says why in one line
 * (`TargetError` for bad target options, `SysError`/`UblkCommandError` from
 * the kernel).
 *
 * @example
 * const dev = await createDevice({ target: 'mem', targetOptions: { size: '256M' }, queues: 2 });
 * console.log(dev.info.path); // /dev/ublkb0
 * await dev.stop();
 */
export function createDevice(options: CreateDeviceOptions): Promise<Device> {
  return open(deviceOptions(options, false), false, options.onOpen);
}

/**
 * Serves a `recoverable` device again after the process that served it
 * died (the device is QUIESCED meanwhile): same target and options, with
 * `id` set. The kernel then reissues the IO it held.
 */
export function recoverDevice(options: CreateDeviceOptions & { id: number }): Promise<Device> {
  return open(deviceOptions(options, true), true, options.onOpen);
}
