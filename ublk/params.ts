/**
 * From what a target describes to what the kernel is told: ublk_params
 * (SET_PARAMS), and the checks a description must pass first.
 */
import { type TargetDescription, TargetError } from '../target/target.js';
import type { Params } from './codec.js';
import * as U from './uapi.js';

/** ublk_params for a device described by `desc`, whose largest request is maxIoSize bytes. */
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
