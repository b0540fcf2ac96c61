/**
 * The qcow2 target: /dev/ublkbN served from a qcow2 image (version 2 or 3)
 * and its backing chain, as qemu defines the format (docs/interop/qcow2.txt).
 * How the queues and the metadata writer share the image: docs/design.md,
 * "qcow2".
 */
import { aioStats } from '../aio-stats.js';
import { type Target, type TargetDevice, TargetError } from '../target.js';
import { SECTOR } from './layer.js';
import { Num } from './meta.js';
import { openQcow2 } from './open.js';
import { Qcow2Queue, type Qcow2QueueData } from './queue.js';
import { MetadataWriter } from './writer.js';

export interface Qcow2Options {
  file: string;
  readOnly?: boolean;
  /** Options of other targets, refused by name rather than ignored. */
  engine?: unknown;
  raw?: unknown;
  size?: unknown;
}

/** Most sectors of one DISCARD or WRITE_ZEROES: each whole cluster is an L2 entry changed under the lock. */
const MAX_ZEROES_SECTORS = (1 << 30) / SECTOR;

const qcow2: Target<Qcow2Options> = {
  name: 'qcow2',
  // queueIo never returns a promise: the queue thread may block in io_uring_enter.
  sync: true,
  async open(options): Promise<TargetDevice> {
    if (typeof options.file !== 'string' || options.file === '') throw new TargetError('the qcow2 target needs an image (-f FILE)');
    if (options.engine !== undefined) throw new TargetError('the qcow2 target has no --engine: it always uses kernel AIO');
    if (options.raw !== undefined) throw new TargetError('--raw is for the loop target (serve the file as raw bytes with -t loop --raw)');
    if (options.size !== undefined) throw new TargetError('the qcow2 target takes its size from the image: no -s');
    const readOnly = options.readOnly === true;
    const image = openQcow2(options.file, readOnly);
    let writer: MetadataWriter | null = null;
    try {
      if (image.meta !== null) writer = await MetadataWriter.start(image.meta, image.layers[0]);
    } catch (e) {
      image.close();
      throw e;
    }
    const L = image.layers[0];
    const cs = 2 ** L.clusterBits;
    const meta = image.meta;
    const queueData: Qcow2QueueData = { layers: image.layers, meta };
    const warnings = [...image.warnings];
    if (image.repaired) warnings.push(`${options.file}: it was dirty (lazy refcounts, or a writer that died): its refcounts were rebuilt`);
    let open = true;
    return {
      size: L.size,
      logicalBlockSize: SECTOR,
      physicalBlockSize: Math.min(cs, 4096),
      readOnly,
      // Writes are acknowledged before their metadata is on disk: FLUSH and FUA make both durable.
      volatileCache: !readOnly,
      fua: !readOnly,
      discard: readOnly ? undefined : { granularity: cs, maxDiscardSectors: MAX_ZEROES_SECTORS, maxWriteZeroesSectors: MAX_ZEROES_SECTORS },
      info: {
        file: L.path,
        version: L.version,
        cluster: cs,
        // The chain, nearest first.
        ...(image.layers.length > 1 ? { backing: image.layers.slice(1).map((b) => `${b.path}:${b.format}`).join(',') } : {}),
        direct: L.direct,
      },
      warnings,
      queueData,
      exclusive: [L.realPath],
      stats(buffers) {
        const s = aioStats(buffers);
        if (meta === null) return s;
        const n = meta.num;
        return {
          ...s,
          qcow2: {
            allocated: n[Num.ALLOCATED],
            copiedOnWrite: n[Num.COW],
            freed: n[Num.FREED],
            waitedForAllocation: n[Num.DEFERRED],
            metadataFlushes: n[Num.FLUSHES],
            metadataBytes: n[Num.META_BYTES],
            fsyncs: n[Num.FSYNCS],
            leaked: n[Num.LEAKED],
          },
        };
      },
      async close() {
        if (!open) return;
        open = false;
        try {
          // The queues are gone: the writer's last flush puts everything on disk.
          await writer?.stop();
        } finally {
          image.close();
        }
      },
    };
  },
  createQueue(ctx, data) {
    return new Qcow2Queue(ctx, data as Qcow2QueueData);
  },
};

export default qcow2;
