/**
 * The loop target: /dev/ublkbN backed by a file or block device, like the
 * kernel's loop driver with direct IO (seed 003) moved to userspace.
 */
import * as file from '../../sys/file.js';
import { aioStats } from '../aio-stats.js';
import { type Target, type TargetDevice, TargetError } from '../target.js';
import { openBacking } from '../backing.js';
import { LoopQueue, type LoopQueueData } from './queue.js';

export interface LoopOptions {
  file: string;
  /** 'aio' (default): kernel AIO reaped in userspace; 'uring': the queue's io_uring. */
  engine?: 'aio' | 'uring';
  readOnly?: boolean;
  /** Serve a file that starts like a disk image format (qcow2, VMDK …) as raw bytes anyway. */
  raw?: boolean;
}

// fallocate(2) lengths are 64-bit, but ublk's are u32 sectors; stay a 4K multiple below that.
const MAX_FALLOCATE_SECTORS = (2 ** 32 - 4096) / 512;

const loop: Target<LoopOptions> = {
  name: 'loop',
  sync: true,
  open(options): TargetDevice {
    if (typeof options.file !== 'string' || options.file === '') throw new TargetError('the loop target needs a backing file (-f FILE)');
    const engine = options.engine ?? 'aio';
    if (engine !== 'aio' && engine !== 'uring') throw new TargetError(`engine must be aio or uring, not '${String(engine)}'`);
    const readOnly = options.readOnly === true;
    const b = openBacking(options.file, { readOnly, contents: options.raw === true ? 'raw' : 'disk' });
    const queueData: LoopQueueData = { fd: b.fd, engine, readOnly };
    let open = true;
    return {
      size: b.size,
      logicalBlockSize: b.logicalBlockSize,
      physicalBlockSize: 4096,
      readOnly,
      volatileCache: true,
      fua: true,
      discard: readOnly ? undefined : { granularity: 4096, maxDiscardSectors: MAX_FALLOCATE_SECTORS, maxWriteZeroesSectors: MAX_FALLOCATE_SECTORS },
      info: { file: b.path, engine, direct: b.direct },
      warnings: b.warnings,
      queueData,
      exclusive: [b.realPath],
      stats: engine === 'aio' ? aioStats : undefined,
      close() {
        if (!open) return;
        open = false;
        try {
          // What the kernel acknowledged must be on disk before the device is gone.
          if (!readOnly) file.fdatasync(b.fd);
        } finally {
          file.close(b.fd);
        }
      },
    };
  },
  createQueue(ctx, data) {
    return new LoopQueue(ctx, data as LoopQueueData);
  },
};

export default loop;
