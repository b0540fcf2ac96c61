/**
 * ublk-ts: userspace block devices (ublk) served by Node.js.
 *
 * Create a device from a built-in target (`loop`, `null`, `mem`) or from a
 * target of your own, written in TypeScript: see {@link Target} and
 * README.md. Needs Linux ≥ 6.0 with `ublk_drv` loaded, and root.
 *
 * @packageDocumentation
 */
export {
  createDevice,
  recoverDevice,
  type CreateDeviceOptions,
  type Device,
  type DeviceInfo,
  type DeviceStats,
  type DeviceStateName,
  type QueueStats,
} from './ublk/api.js';
export {
  LATENCY_OPS,
  latencyBucketUpperUs,
  latencyCount,
  latencyPercentile,
  mergeLatency,
  type LatencyHistogram,
  type LatencyOp,
} from './ublk/latency.js';
export {
  TargetError,
  TARGET_USER_DATA,
  type QueueContext,
  type Target,
  type TargetDescription,
  type TargetDevice,
  type TargetQueue,
} from './target/target.js';
export { BUILTIN_TARGETS } from './target/registry.js';
export { parseSize } from './target/size.js';
export type { LoopOptions } from './target/loop/index.js';
export type { MemOptions } from './target/mem.js';
export type { NullOptions } from './target/null.js';
export {
  UBLK_IO_OP_READ,
  UBLK_IO_OP_WRITE,
  UBLK_IO_OP_FLUSH,
  UBLK_IO_OP_DISCARD,
  UBLK_IO_OP_WRITE_ZEROES,
  UBLK_IO_F_FUA,
  UBLK_IO_F_NOUNMAP,
} from './sys/ublk/io.js';
export { SysError } from './sys/error.js';
export { UblkCommandError } from './ublk/control.js';

/** errno values a target returns negated, e.g. `return -EIO`. */
export const EIO = 5;
export const ENOSPC = 28;
export const EOPNOTSUPP = 95;
