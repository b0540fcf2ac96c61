/**
 * A RAM disk whose chosen sectors fail to read with EIO: a way to see how
 * filesystems and tools handle bad blocks. Written against the public API
 * only (in your project: `from 'ublk-ts'`).
 *
 *   sudo node dist/examples/bad-sectors.js 64M 1000 1001 5000
 *
 * serves /dev/ublkbN until Ctrl-C. The module's default export is the
 * target, which every queue's worker thread loads.
 */
import { isMainThread } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { EIO, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE, createDevice, parseSize, type Target, TargetError } from '../index.js';

export interface BadSectorsOptions {
  size: number | string;
  /** 512-byte sectors whose reads fail. */
  badSectors: number[];
}

interface QueueData {
  disk: SharedArrayBuffer;
  bad: number[];
}

const target: Target<BadSectorsOptions> = {
  name: 'bad-sectors',
  sync: true,
  open({ size, badSectors }) {
    const bytes = parseSize(size);
    if (!badSectors.every((s) => Number.isInteger(s) && s >= 0 && s < bytes / 512)) throw new TargetError('bad sectors must lie on the disk');
    const data: QueueData = { disk: new SharedArrayBuffer(bytes), bad: [...badSectors].sort((a, b) => a - b) };
    return { size: bytes, info: { badSectors: data.bad.join(',') }, queueData: data };
  },
  createQueue(ctx, queueData) {
    const { disk: sab, bad } = queueData as QueueData;
    const disk = new Uint8Array(sab);
    const hitsBadSector = (offset: number, length: number) => bad.some((s) => s * 512 >= offset && s * 512 < offset + length);
    return {
      queueIo(tag, op, _flags, offset, length) {
        if (op === UBLK_IO_OP_READ) {
          if (hitsBadSector(offset, length)) return -EIO;
          ctx.buffer(tag).set(disk.subarray(offset, offset + length));
          return length;
        }
        if (op === UBLK_IO_OP_WRITE) {
          disk.set(ctx.buffer(tag).subarray(0, length), offset);
          return length;
        }
        return 0; // FLUSH: nothing cached
      },
    };
  },
};

export default target;

// Run as a program (not when a queue thread loads the module for the target).
if (isMainThread && process.argv[1] === fileURLToPath(import.meta.url)) {
  const [size = '64M', ...sectors] = process.argv.slice(2);
  const dev = await createDevice({ target: new URL(import.meta.url), targetOptions: { size, badSectors: sectors.map(Number) } });
  console.log(`${dev.info.path}: ${size} RAM disk, unreadable sectors: ${sectors.join(' ') || 'none'} (Ctrl-C to remove)`);
  const stop = () => void dev.stop().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
