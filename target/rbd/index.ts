/**
 * The rbd target: /dev/ublkbN served by a Ceph RBD image through librbd,
 * Ceph's own client library (no storage engine of ours). `open` connects
 * to the cluster, opens the image once and, when the image has the managed
 * exclusive lock, takes it for the device's life, as `rbd device map -o
 * exclusive` does, so that no second client writes under a mounted
 * filesystem. The queues share that image handle (queue.ts).
 */
import { EventFd } from '../../sys/eventfd.js';
import { EACCES, ENOENT, EPERM, EROFS, ETIMEDOUT } from '../../sys/errno.js';
import { strerror } from '../../sys/native.js';
import * as rbd from '../../sys/rbd.js';
import { type Target, type TargetDevice, TargetError } from '../target.js';
import { mailboxBytes } from './mailbox.js';
import { RS, RbdQueue, type RbdQueueData } from './queue.js';

export interface RbdOptions {
  /** POOL/IMAGE */
  image: string;
  /** Ceph configuration file (default: librados' search, /etc/ceph/ceph.conf first). */
  conf?: string;
  /** Client id, without 'client.' (default admin). */
  id?: string;
  keyring?: string;
  /** Seconds to reach the cluster, and for one request to an OSD before it fails with EIO (default 30). */
  timeout?: number;
  readOnly?: boolean;
}

export const DEFAULT_TIMEOUT_S = 30;
/** The queues share one image handle; each has a mailbox ring (mailbox.ts). */
const MAX_QUEUES = 16;
/** Discards in whole 64 KiB units, as the kernel rbd driver's default alloc_size. */
const DISCARD_GRANULARITY = 64 * 1024;
/** One discard or write-zeroes request covers at most this (a 4K multiple below u32 sectors). */
const MAX_RANGE_SECTORS = (2 ** 32 - 4096) / 512;

const target: Target<RbdOptions> = {
  name: 'rbd',
  // Requests complete from rbd_poll_io_events, woken by the eventfd.
  sync: true,
  open(options): TargetDevice {
    const spec = parseImageSpec(options.image);
    const timeout = options.timeout ?? DEFAULT_TIMEOUT_S;
    if (!Number.isInteger(timeout) || timeout < 1 || timeout > 3600) throw new TargetError(`timeout must be whole seconds from 1 to 3600, not ${String(timeout)}`);
    const id = options.id ?? 'admin';
    if (!/^[A-Za-z0-9_.-]+$/.test(id)) throw new TargetError(`bad Ceph client id '${id}' (the name after 'client.')`);
    const readOnly = options.readOnly === true;
    try {
      rbd.loadRbd();
    } catch (e) {
      throw new TargetError((e as Error).message);
    }
    const opened = new Opened();
    try {
      opened.connect(id, options.conf, options.keyring, timeout);
      opened.openImage(spec.pool, spec.image, readOnly, `client.${id}`);
      const image = opened.image;
      const size = check(rbd.rbdGetSize(image), `${spec.text}: cannot read the image size`);
      if (size < 4096 || size % 512 !== 0) throw new TargetError(`${spec.text}: the image is ${size} bytes, not a whole number of 512-byte blocks of at least 4K`);
      const features = check(rbd.rbdGetFeatures(image), `${spec.text}: cannot read the image features`);
      const lock = !readOnly && (features & rbd.RBD_FEATURE_EXCLUSIVE_LOCK) !== 0;
      if (lock) {
        const r = rbd.rbdLockAcquire(image, rbd.RBD_LOCK_MODE_EXCLUSIVE);
        // EROFS: the owner would not hand the lock over; anything else is why we could not ask.
        if (r < 0) throw new TargetError(`${spec.text}: the image is locked by another client${r === -EROFS ? '' : ` (${strerror(-r)})`}`);
      }
      opened.events = new EventFd();
      check(rbd.rbdSetImageNotification(image, opened.events.fd, rbd.EVENT_TYPE_EVENTFD), `${spec.text}: rbd_set_image_notification`);
      const queueData: RbdQueueData = {
        image,
        eventFd: opened.events.fd,
        mailbox: new SharedArrayBuffer(mailboxBytes(MAX_QUEUES)),
        mailboxQueues: MAX_QUEUES,
        readOnly,
        drainMs: (timeout + 5) * 1000,
      };
      return {
        size,
        logicalBlockSize: 512,
        physicalBlockSize: 4096,
        readOnly,
        // librbd's cache (rbd_cache, on by default) holds writes until a flush.
        volatileCache: !readOnly,
        discard: readOnly ? undefined : { granularity: DISCARD_GRANULARITY, maxDiscardSectors: MAX_RANGE_SECTORS, maxWriteZeroesSectors: MAX_RANGE_SECTORS },
        queueLimit: { max: MAX_QUEUES, reason: `the rbd target serves at most ${MAX_QUEUES} queues` },
        info: { image: spec.text, client: `client.${id}`, lock: lock ? 'exclusive' : 'none' },
        queueData,
        exclusive: [`rbd:${opened.fsid}/${spec.text}`],
        stats: rbdStats,
        close: () => opened.close(),
      };
    } catch (e) {
      opened.close();
      throw e;
    }
  },
  createQueue(ctx, data) {
    return new RbdQueue(ctx, data as RbdQueueData);
  },
};

export default target;

interface ImageSpec {
  pool: string;
  image: string;
  text: string;
}

/** POOL/IMAGE, as `rbd` writes it (no namespace, no snapshot). */
export function parseImageSpec(s: unknown): ImageSpec {
  if (typeof s !== 'string' || s === '') throw new TargetError('the rbd target needs an image (--image POOL/IMAGE)');
  const m = /^([^/@\s]+)\/([^/@\s]+)$/.exec(s);
  if (m === null) throw new TargetError(`bad image '${s}': POOL/IMAGE, e.g. rbd/disk1`);
  return { pool: m[1], image: m[2], text: s };
}

function check(r: number, what: string): number {
  if (r < 0) throw new TargetError(`${what}: ${strerror(-r)}`);
  return r;
}

/** What open() holds, released in reverse order by close(), once. */
class Opened {
  cluster = 0;
  ioctx = 0;
  image = 0;
  events: EventFd | null = null;
  fsid = '';
  private monHost = '';

  connect(id: string, conf: string | undefined, keyring: string | undefined, timeout: number): void {
    const c = rbd.radosCreate(`client.${id}`);
    if (c < 0) throw new TargetError(`cannot create a Ceph client: ${strerror(-c)}`);
    this.cluster = c;
    const r = rbd.radosConfReadFile(c, conf ?? null);
    if (r < 0) {
      throw new TargetError(conf === undefined ? `no Ceph configuration found (/etc/ceph/ceph.conf; give one with --conf FILE): ${strerror(-r)}` : `cannot read the Ceph configuration ${conf}: ${strerror(-r)}`);
    }
    const set = (k: string, v: string) => check(rbd.radosConfSet(c, k, v), `Ceph option ${k}`);
    if (keyring !== undefined) set('keyring', keyring);
    // librados logs to stderr by default: `ublk add` prints one line of its own.
    set('log_to_stderr', 'false');
    set('err_to_stderr', 'false');
    set('client_mount_timeout', String(timeout));
    set('rados_mon_op_timeout', String(timeout));
    // A request an OSD does not answer fails (EIO) instead of holding `ublk del` for ever.
    set('rados_osd_op_timeout', String(timeout));
    this.monHost = rbd.radosConfGet(c, 'mon_host') ?? '';
    const r2 = rbd.radosConnect(c);
    if (r2 < 0) {
      const mons = this.monHost === '' ? '' : ` (mon_host ${this.monHost})`;
      if (r2 === -ETIMEDOUT) throw new TargetError(`cannot reach the Ceph cluster${mons} within ${timeout} s`);
      throw new TargetError(`cannot connect to the Ceph cluster as client.${id}${mons}: ${strerror(-r2)}`);
    }
    this.fsid = rbd.radosClusterFsid(c) ?? '';
  }

  openImage(pool: string, image: string, readOnly: boolean, client: string): void {
    const io = rbd.radosIoctxCreate(this.cluster, pool);
    if (io === -ENOENT) throw new TargetError(`${pool}/${image}: the cluster has no pool '${pool}'`);
    if (io < 0) throw new TargetError(`${pool}/${image}: cannot open pool '${pool}': ${strerror(-io)}`);
    this.ioctx = io;
    const img = rbd.rbdOpen(io, image, readOnly);
    if (img === -ENOENT) throw new TargetError(`${pool}/${image}: pool '${pool}' has no image '${image}'`);
    if (img === -EPERM || img === -EACCES) throw new TargetError(`${pool}/${image}: ${client} may not open the image: ${strerror(-img)}`);
    if (img < 0) throw new TargetError(`${pool}/${image}: cannot open the image: ${strerror(-img)}`);
    this.image = img;
  }

  close(): void {
    // rbd_close flushes librbd's cache and releases the exclusive lock.
    if (this.image !== 0) rbd.rbdClose(this.image);
    this.image = 0;
    this.events?.close();
    this.events = null;
    if (this.ioctx !== 0) rbd.radosIoctxDestroy(this.ioctx);
    this.ioctx = 0;
    if (this.cluster !== 0) rbd.radosShutdown(this.cluster);
    this.cluster = 0;
  }
}

/** What `ublk stats` shows: each queue's requests to librbd and their latency (submit to completion seen). */
function rbdStats(buffers: (SharedArrayBuffer | null)[]): Record<string, unknown> {
  return {
    rbd: buffers.map((b) => {
      if (b === null) return null;
      const s = new Float64Array(b);
      return {
        ios: s[RS.ios],
        errors: s[RS.errors],
        avgLatencyUs: s[RS.ios] > 0 ? Math.round(s[RS.latencySumUs] / s[RS.ios]) : 0,
        maxLatencyUs: Math.round(s[RS.latencyMaxUs]),
      };
    }),
  };
}
