/**
 * Encode/decode of the ublk control structs between plain objects and the
 * native buffers the kernel reads (offsets in uapi.ts). Control path only:
 * the IO path reads descriptors in place (queue.ts).
 */
import {
  UBLK_PARAM_TYPE_BASIC,
  UBLK_PARAM_TYPE_DEVT,
  UBLK_PARAM_TYPE_DISCARD,
  ublk_param_basic as B,
  ublk_param_devt as T,
  ublk_param_discard as D,
  ublk_params as P,
  ublksrv_ctrl_dev_info as I,
} from './uapi.js';

const TWO32 = 0x100000000;

export function getU64(dv: DataView, off: number): number {
  return dv.getUint32(off, true) + dv.getUint32(off + 4, true) * TWO32;
}

export function setU64(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, v >>> 0, true);
  dv.setUint32(off + 4, Math.floor(v / TWO32) >>> 0, true);
}

/** struct ublksrv_ctrl_dev_info, as the kernel reports it. */
export interface DevInfo {
  nrHwQueues: number;
  queueDepth: number;
  /** UBLK_S_DEV_DEAD 0, LIVE 1, QUIESCED 2, FAIL_IO 3. */
  state: number;
  maxIoBufBytes: number;
  devId: number;
  ublksrvPid: number;
  /** UBLK_F_* */
  flags: number;
  ublksrvFlags: number;
  ownerUid: number;
  ownerGid: number;
}

export function encodeDevInfo(dv: DataView, info: Partial<DevInfo>): void {
  dv.setUint16(I.nr_hw_queues, info.nrHwQueues ?? 0, true);
  dv.setUint16(I.queue_depth, info.queueDepth ?? 0, true);
  dv.setUint16(I.state, info.state ?? 0, true);
  dv.setUint32(I.max_io_buf_bytes, info.maxIoBufBytes ?? 0, true);
  dv.setUint32(I.dev_id, info.devId ?? 0xffffffff, true);
  dv.setInt32(I.ublksrv_pid, info.ublksrvPid ?? 0, true);
  setU64(dv, I.flags, info.flags ?? 0);
  setU64(dv, I.ublksrv_flags, info.ublksrvFlags ?? 0);
  dv.setUint32(I.owner_uid, info.ownerUid ?? 0, true);
  dv.setUint32(I.owner_gid, info.ownerGid ?? 0, true);
}

export function decodeDevInfo(dv: DataView): DevInfo {
  return {
    nrHwQueues: dv.getUint16(I.nr_hw_queues, true),
    queueDepth: dv.getUint16(I.queue_depth, true),
    state: dv.getUint16(I.state, true),
    maxIoBufBytes: dv.getUint32(I.max_io_buf_bytes, true),
    devId: dv.getUint32(I.dev_id, true),
    ublksrvPid: dv.getInt32(I.ublksrv_pid, true),
    flags: getU64(dv, I.flags),
    ublksrvFlags: getU64(dv, I.ublksrv_flags),
    ownerUid: dv.getUint32(I.owner_uid, true),
    ownerGid: dv.getUint32(I.owner_gid, true),
  };
}

/** struct ublk_param_basic */
export interface BasicParams {
  /** UBLK_ATTR_* */
  attrs: number;
  logicalBsShift: number;
  physicalBsShift: number;
  ioOptShift: number;
  ioMinShift: number;
  maxSectors: number;
  chunkSectors: number;
  devSectors: number;
  virtBoundaryMask: number;
}

/** struct ublk_param_discard */
export interface DiscardParams {
  discardAlignment: number;
  discardGranularity: number;
  maxDiscardSectors: number;
  maxWriteZeroesSectors: number;
  maxDiscardSegments: number;
}

/** struct ublk_param_devt (kernel-filled) */
export interface DevtParams {
  charMajor: number;
  charMinor: number;
  diskMajor: number;
  diskMinor: number;
}

/** struct ublk_params: the parts present are the `types` sent. */
export interface Params {
  basic?: BasicParams;
  discard?: DiscardParams;
  devt?: DevtParams;
}

export function encodeParams(dv: DataView, p: Params): void {
  let types = 0;
  if (p.basic) {
    types |= UBLK_PARAM_TYPE_BASIC;
    const b = P.basic;
    dv.setUint32(b + B.attrs, p.basic.attrs, true);
    dv.setUint8(b + B.logical_bs_shift, p.basic.logicalBsShift);
    dv.setUint8(b + B.physical_bs_shift, p.basic.physicalBsShift);
    dv.setUint8(b + B.io_opt_shift, p.basic.ioOptShift);
    dv.setUint8(b + B.io_min_shift, p.basic.ioMinShift);
    dv.setUint32(b + B.max_sectors, p.basic.maxSectors, true);
    dv.setUint32(b + B.chunk_sectors, p.basic.chunkSectors, true);
    setU64(dv, b + B.dev_sectors, p.basic.devSectors);
    setU64(dv, b + B.virt_boundary_mask, p.basic.virtBoundaryMask);
  }
  if (p.discard) {
    types |= UBLK_PARAM_TYPE_DISCARD;
    const d = P.discard;
    dv.setUint32(d + D.discard_alignment, p.discard.discardAlignment, true);
    dv.setUint32(d + D.discard_granularity, p.discard.discardGranularity, true);
    dv.setUint32(d + D.max_discard_sectors, p.discard.maxDiscardSectors, true);
    dv.setUint32(d + D.max_write_zeroes_sectors, p.discard.maxWriteZeroesSectors, true);
    dv.setUint16(d + D.max_discard_segments, p.discard.maxDiscardSegments, true);
  }
  dv.setUint32(P.len, P.SIZE, true);
  dv.setUint32(P.types, types, true);
}

export function decodeParams(dv: DataView): Params {
  const types = dv.getUint32(P.types, true);
  const p: Params = {};
  if (types & UBLK_PARAM_TYPE_BASIC) {
    const b = P.basic;
    p.basic = {
      attrs: dv.getUint32(b + B.attrs, true),
      logicalBsShift: dv.getUint8(b + B.logical_bs_shift),
      physicalBsShift: dv.getUint8(b + B.physical_bs_shift),
      ioOptShift: dv.getUint8(b + B.io_opt_shift),
      ioMinShift: dv.getUint8(b + B.io_min_shift),
      maxSectors: dv.getUint32(b + B.max_sectors, true),
      chunkSectors: dv.getUint32(b + B.chunk_sectors, true),
      devSectors: getU64(dv, b + B.dev_sectors),
      virtBoundaryMask: getU64(dv, b + B.virt_boundary_mask),
    };
  }
  if (types & UBLK_PARAM_TYPE_DISCARD) {
    const d = P.discard;
    p.discard = {
      discardAlignment: dv.getUint32(d + D.discard_alignment, true),
      discardGranularity: dv.getUint32(d + D.discard_granularity, true),
      maxDiscardSectors: dv.getUint32(d + D.max_discard_sectors, true),
      maxWriteZeroesSectors: dv.getUint32(d + D.max_write_zeroes_sectors, true),
      maxDiscardSegments: dv.getUint16(d + D.max_discard_segments, true),
    };
  }
  if (types & UBLK_PARAM_TYPE_DEVT) {
    const t = P.devt;
    p.devt = {
      charMajor: dv.getUint32(t + T.char_major, true),
      charMinor: dv.getUint32(t + T.char_minor, true),
      diskMajor: dv.getUint32(t + T.disk_major, true),
      diskMinor: dv.getUint32(t + T.disk_minor, true),
    };
  }
  return p;
}
