/**
 * librados and librbd (Ceph's client libraries, include/rados/librados.h and
 * include/rbd/librbd.h), loaded on first use so that only the rbd target
 * needs them installed. Handles (rados_t, rados_ioctx_t, rbd_image_t,
 * rbd_completion_t) are addresses as JS numbers, like every address in
 * sys/; calls return librados' result, `-errno` on failure, and never throw.
 */
import { type Library, loadLibrary } from './native.js';

/** rbd_set_image_notification(): the fd is an eventfd (librbd.h EVENT_TYPE_EVENTFD). */
export const EVENT_TYPE_EVENTFD = 2;
/** rbd_lock_acquire(): the lock is not handed to another client that asks for it. */
export const RBD_LOCK_MODE_EXCLUSIVE = 0;
/** rbd_get_features(): the image has the managed exclusive lock. */
export const RBD_FEATURE_EXCLUSIVE_LOCK = 1 << 2;

type Fn = (...args: unknown[]) => unknown;

interface Bindings {
  rados_create2: Fn;
  rados_conf_read_file: Fn;
  rados_conf_set: Fn;
  rados_conf_get: Fn;
  rados_cluster_fsid: Fn;
  rados_connect: Fn;
  rados_shutdown: Fn;
  rados_ioctx_create: Fn;
  rados_ioctx_destroy: Fn;
  rbd_open: Fn;
  rbd_open_read_only: Fn;
  rbd_close: Fn;
  rbd_get_size: Fn;
  rbd_get_features: Fn;
  rbd_stat: Fn;
  rbd_lock_acquire: Fn;
  rbd_set_image_notification: Fn;
  rbd_poll_io_events: Fn;
  rbd_aio_create_completion: Fn;
  rbd_aio_read: Fn;
  rbd_aio_write: Fn;
  rbd_aio_flush: Fn;
  rbd_aio_discard: Fn;
  rbd_aio_write_zeroes: Fn;
  rbd_aio_get_return_value: Fn;
  rbd_aio_get_arg: Fn;
  rbd_aio_release: Fn;
}

let lib: Bindings | null = null;

/** Loads librados and librbd; throws an Error that names the package when they are missing. */
export function loadRbd(): void {
  if (lib !== null) return;
  let rados: Library;
  let rbd: Library;
  try {
    rados = loadLibrary('librados.so.2');
    rbd = loadLibrary('librbd.so.1');
  } catch (e) {
    throw new Error(`librbd is not installed (Debian: apt-get install librbd1): ${(e as Error).message}`);
  }
  // Handles and out-pointers are `void *`; cb_arg and rbd_aio_get_arg are
  // integers (the request's tag), so no BigInt is made per IO.
  lib = {
    rados_create2: rados.func('int rados_create2(_Out_ void **cluster, const char *clustername, const char *name, uint64_t flags)'),
    rados_conf_read_file: rados.func('int rados_conf_read_file(void *cluster, const char *path)'),
    rados_conf_set: rados.func('int rados_conf_set(void *cluster, const char *option, const char *value)'),
    rados_conf_get: rados.func('int rados_conf_get(void *cluster, const char *option, void *buf, size_t len)'),
    rados_cluster_fsid: rados.func('int rados_cluster_fsid(void *cluster, void *buf, size_t len)'),
    rados_connect: rados.func('int rados_connect(void *cluster)'),
    rados_shutdown: rados.func('void rados_shutdown(void *cluster)'),
    rados_ioctx_create: rados.func('int rados_ioctx_create(void *cluster, const char *pool, _Out_ void **ioctx)'),
    rados_ioctx_destroy: rados.func('void rados_ioctx_destroy(void *ioctx)'),
    rbd_open: rbd.func('int rbd_open(void *ioctx, const char *name, _Out_ void **image, const char *snap)'),
    rbd_open_read_only: rbd.func('int rbd_open_read_only(void *ioctx, const char *name, _Out_ void **image, const char *snap)'),
    rbd_close: rbd.func('int rbd_close(void *image)'),
    rbd_get_size: rbd.func('int rbd_get_size(void *image, _Out_ uint64_t *size)'),
    rbd_get_features: rbd.func('int rbd_get_features(void *image, _Out_ uint64_t *features)'),
    rbd_stat: rbd.func('int rbd_stat(void *image, void *info, size_t infosize)'),
    rbd_lock_acquire: rbd.func('int rbd_lock_acquire(void *image, int mode)'),
    rbd_set_image_notification: rbd.func('int rbd_set_image_notification(void *image, int fd, int type)'),
    rbd_poll_io_events: rbd.func('int rbd_poll_io_events(void *image, void *comps, int numcomp)'),
    rbd_aio_create_completion: rbd.func('int rbd_aio_create_completion(uintptr_t arg, void *cb, void *comp)'),
    rbd_aio_read: rbd.func('int rbd_aio_read(void *image, uint64_t off, size_t len, void *buf, void *comp)'),
    rbd_aio_write: rbd.func('int rbd_aio_write(void *image, uint64_t off, size_t len, void *buf, void *comp)'),
    rbd_aio_flush: rbd.func('int rbd_aio_flush(void *image, void *comp)'),
    rbd_aio_discard: rbd.func('int rbd_aio_discard(void *image, uint64_t off, uint64_t len, void *comp)'),
    rbd_aio_write_zeroes: rbd.func('int rbd_aio_write_zeroes(void *image, uint64_t off, size_t len, void *comp, int zero_flags, int op_flags)'),
    rbd_aio_get_return_value: rbd.func('long rbd_aio_get_return_value(void *comp)'),
    rbd_aio_get_arg: rbd.func('uintptr_t rbd_aio_get_arg(void *comp)'),
    rbd_aio_release: rbd.func('void rbd_aio_release(void *comp)'),
  };
}

function b(): Bindings {
  if (lib === null) loadRbd();
  return lib as Bindings;
}

/** An out-pointer from koffi (a BigInt address) as a number. */
function addr(out: [unknown]): number {
  return Number(out[0] as bigint);
}

/** rados_create2() for client `name` ('client.admin'); returns the handle or -errno. */
export function radosCreate(name: string): number {
  const out: [unknown] = [null];
  const r = b().rados_create2(out, 'ceph', name, 0) as number;
  return r < 0 ? r : addr(out);
}
export function radosConfReadFile(cluster: number, path: string | null): number {
  return b().rados_conf_read_file(cluster, path) as number;
}
export function radosConfSet(cluster: number, option: string, value: string): number {
  return b().rados_conf_set(cluster, option, value) as number;
}
/** rados_conf_get(): an option's value, null when unknown. */
export function radosConfGet(cluster: number, option: string): string | null {
  const buf = Buffer.alloc(1024);
  if ((b().rados_conf_get(cluster, option, buf, buf.length) as number) < 0) return null;
  return cString(buf);
}
/** rados_cluster_fsid() of a connected cluster, null on failure. */
export function radosClusterFsid(cluster: number): string | null {
  const buf = Buffer.alloc(64);
  if ((b().rados_cluster_fsid(cluster, buf, buf.length) as number) < 0) return null;
  return cString(buf);
}
function cString(buf: Buffer): string {
  const end = buf.indexOf(0);
  return buf.toString('utf8', 0, end < 0 ? buf.length : end);
}
export function radosConnect(cluster: number): number {
  return b().rados_connect(cluster) as number;
}
export function radosShutdown(cluster: number): void {
  b().rados_shutdown(cluster);
}
/** rados_ioctx_create(); returns the handle or -errno. */
export function radosIoctxCreate(cluster: number, pool: string): number {
  const out: [unknown] = [null];
  const r = b().rados_ioctx_create(cluster, pool, out) as number;
  return r < 0 ? r : addr(out);
}
export function radosIoctxDestroy(ioctx: number): void {
  b().rados_ioctx_destroy(ioctx);
}
/** rbd_open() or rbd_open_read_only(); returns the image handle or -errno. */
export function rbdOpen(ioctx: number, name: string, readOnly: boolean): number {
  const out: [unknown] = [null];
  const f = readOnly ? b().rbd_open_read_only : b().rbd_open;
  const r = f(ioctx, name, out, null) as number;
  return r < 0 ? r : addr(out);
}
export function rbdClose(image: number): number {
  return b().rbd_close(image) as number;
}
/** rbd_get_size(); the size in bytes or -errno. */
export function rbdGetSize(image: number): number {
  const out: [unknown] = [null];
  const r = b().rbd_get_size(image, out) as number;
  return r < 0 ? r : Number(out[0] as bigint | number);
}
/** rbd_get_features(); the RBD_FEATURE_* bits (those below 2^32) or -errno. */
export function rbdGetFeatures(image: number): number {
  const out: [unknown] = [null];
  const r = b().rbd_get_features(image, out) as number;
  return r < 0 ? r : Number(BigInt(out[0] as bigint | number) & 0xffffffffn);
}
/** rbd_stat(): rbd_image_info_t.obj_size (offset 8), the image's object size, or -errno. */
export function rbdObjectSize(image: number): number {
  // rbd_image_info_t: size, obj_size, num_objs (u64), order (int), block_name_prefix[24], parent_pool (i64), parent_name[96]
  const info = new BigUint64Array(24);
  const r = b().rbd_stat(image, info, info.byteLength) as number;
  return r < 0 ? r : Number(info[1]);
}
export function rbdLockAcquire(image: number, mode: number): number {
  return b().rbd_lock_acquire(image, mode) as number;
}
export function rbdSetImageNotification(image: number, fd: number, type: number): number {
  return b().rbd_set_image_notification(image, fd, type) as number;
}

/**
 * The hot path of one queue: an image handle and an out-pointer buffer made
 * once, so that issuing and reaping IO makes no JS object.
 */
export class RbdIo {
  private readonly f: Bindings;
  private readonly image: number;
  /** rbd_completion_t out-pointer of rbd_aio_create_completion, as two u32. */
  private readonly out = new Uint32Array(2);
  /** rbd_poll_io_events' array of rbd_completion_t, as u32 pairs. */
  readonly events: Uint32Array;

  constructor(image: number, maxEvents: number) {
    this.f = b();
    this.image = image;
    this.events = new Uint32Array(2 * maxEvents);
  }

  /** A completion that carries `arg`; its address, or -errno. */
  completion(arg: number): number {
    const r = this.f.rbd_aio_create_completion(arg, null, this.out) as number;
    return r < 0 ? r : this.out[0] + this.out[1] * 2 ** 32;
  }
  read(offset: number, length: number, buf: number, comp: number): number {
    return this.f.rbd_aio_read(this.image, offset, length, buf, comp) as number;
  }
  write(offset: number, length: number, buf: number, comp: number): number {
    return this.f.rbd_aio_write(this.image, offset, length, buf, comp) as number;
  }
  flush(comp: number): number {
    return this.f.rbd_aio_flush(this.image, comp) as number;
  }
  discard(offset: number, length: number, comp: number): number {
    return this.f.rbd_aio_discard(this.image, offset, length, comp) as number;
  }
  writeZeroes(offset: number, length: number, comp: number): number {
    return this.f.rbd_aio_write_zeroes(this.image, offset, length, comp, 0, 0) as number;
  }
  /** rbd_poll_io_events(): how many finished completions it put in `events` (at most its length / 2), or -errno. */
  poll(): number {
    return this.f.rbd_poll_io_events(this.image, this.events, this.events.length >>> 1) as number;
  }
  /** The address of finished completion `i` of the last poll(). */
  event(i: number): number {
    return this.events[2 * i] + this.events[2 * i + 1] * 2 ** 32;
  }
  returnValue(comp: number): number {
    return this.f.rbd_aio_get_return_value(comp) as number;
  }
  arg(comp: number): number {
    return Number(this.f.rbd_aio_get_arg(comp));
  }
  release(comp: number): void {
    this.f.rbd_aio_release(comp);
  }
}
