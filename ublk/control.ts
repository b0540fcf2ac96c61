/**
 * /dev/ublk-control: the control commands, sent as IORING_OP_URING_CMD on
 * an SQE128 ring. Each command runs with IOSQE_ASYNC, so the ones that
 * block in the kernel (START_DEV waits for every fetch and the partition
 * scan, DEL_DEV for /dev/ublkcN to close) block an io-wq thread, not this
 * thread: the caller's event loop keeps turning and its workers keep
 * serving IO. Completions are picked up when the ring fd polls readable.
 */
import { SysError } from '../sys/error.js';
import * as file from '../sys/file.js';
import { NativeMemory } from '../sys/memory.js';
import { pollReadable } from '../sys/native.js';
import { IOSQE_ASYNC, IORING_SETUP_SQE128 } from '../sys/uring/constants.js';
import { putU64, prepUringCmd, sqeSetData, sqeSetFlags } from '../sys/uring/prep.js';
import { IoUring } from '../sys/uring/ring.js';
import { type DevInfo, type Params, decodeDevInfo, decodeParams, encodeDevInfo, encodeParams, getU64 } from './codec.js';
import * as U from './uapi.js';

export const UBLK_CONTROL_PATH = '/dev/ublk-control';

const COMMAND_NAMES: Record<number, string> = {
  [U.UBLK_U_CMD_GET_QUEUE_AFFINITY]: 'GET_QUEUE_AFFINITY',
  [U.UBLK_U_CMD_GET_DEV_INFO]: 'GET_DEV_INFO',
  [U.UBLK_U_CMD_ADD_DEV]: 'ADD_DEV',
  [U.UBLK_U_CMD_DEL_DEV]: 'DEL_DEV',
  [U.UBLK_U_CMD_START_DEV]: 'START_DEV',
  [U.UBLK_U_CMD_STOP_DEV]: 'STOP_DEV',
  [U.UBLK_U_CMD_SET_PARAMS]: 'SET_PARAMS',
  [U.UBLK_U_CMD_GET_PARAMS]: 'GET_PARAMS',
  [U.UBLK_U_CMD_START_USER_RECOVERY]: 'START_USER_RECOVERY',
  [U.UBLK_U_CMD_END_USER_RECOVERY]: 'END_USER_RECOVERY',
  [U.UBLK_U_CMD_GET_DEV_INFO2]: 'GET_DEV_INFO2',
  [U.UBLK_U_CMD_GET_FEATURES]: 'GET_FEATURES',
  [U.UBLK_U_CMD_DEL_DEV_ASYNC]: 'DEL_DEV_ASYNC',
};

/** A control command the kernel refused: `syscall` is the command ('ADD_DEV'), `devId` the device. */
export class UblkCommandError extends SysError {
  readonly devId: number;
  constructor(command: string, errno: number, devId: number) {
    super(command, errno);
    this.devId = devId;
  }
}

/** glibc's sizeof(cpu_set_t): 1024 CPUs, a multiple of 8 bytes as ublk_drv asks. */
const CPU_SET_BYTES = 128;

interface CommandArgs {
  devId: number;
  queueId?: number;
  data?: number;
  /** In/out buffer of `len` bytes (native memory the kernel reads or fills). */
  buf?: NativeMemory;
  len?: number;
  /** Bytes of `buf` that are the char device's path, before the payload (unprivileged devices). */
  devPathLen?: number;
}

/** The char device path an unprivileged device's commands carry (ublk_drv checks its owner and mode). */
export function charDevPath(devId: number): string {
  return `/dev/ublkc${devId}`;
}

type Waiter = (res: number) => void;

export class UblkControl {
  private readonly fd: number;
  private readonly ring: IoUring;
  private readonly waiters = new Map<number, Waiter>();
  private poller: ReturnType<typeof pollReadable> | null = null;
  private seq = 0;
  /**
   * Devices created with UBLK_F_UNPRIVILEGED_DEV: ublk_drv checks every
   * command for them against /dev/ublkcN's permissions, so the command's
   * buffer starts with that path (dev_path_len bytes), the payload after it.
   */
  private readonly unprivileged = new Set<number>();

  private constructor(fd: number, ring: IoUring) {
    this.fd = fd;
    this.ring = ring;
  }

  /** Opens the control device; throws SysError (ENOENT when ublk_drv is not loaded). */
  static open(path = UBLK_CONTROL_PATH): UblkControl {
    const fd = file.open(path, file.O_RDWR);
    try {
      return new UblkControl(fd, new IoUring(32, { flags: IORING_SETUP_SQE128 }));
    } catch (e) {
      file.close(fd);
      throw e;
    }
  }

  close(): void {
    this.poller?.close();
    this.poller = null;
    this.ring.close();
    file.close(this.fd);
  }

  /** Commands for `devId` carry its char device path from now on (an unprivileged device). */
  markUnprivileged(devId: number): void {
    this.unprivileged.add(devId);
  }

  /** Sends one command; resolves with the CQE result (>= 0) or throws UblkCommandError. */
  async command(op: number, args: CommandArgs): Promise<number> {
    const withPath = this.unprivileged.has(args.devId) && op !== U.UBLK_U_CMD_ADD_DEV && op !== U.UBLK_U_CMD_GET_FEATURES;
    const res = withPath ? await this.submitWithPath(op, args) : await this.submit(op, args);
    if (res < 0) throw new UblkCommandError(COMMAND_NAMES[op] ?? `0x${op.toString(16)}`, -res, args.devId);
    return res;
  }

  /** The command with /dev/ublkcN before its payload; the kernel reads and writes the payload after the path. */
  private async submitWithPath(op: number, args: CommandArgs): Promise<number> {
    const path = Buffer.from(charDevPath(args.devId));
    const len = args.len ?? 0;
    const buf = NativeMemory.aligned(path.length + len, 64);
    try {
      const bytes = new Uint8Array(buf.buffer);
      bytes.set(path, 0);
      if (args.buf) bytes.set(new Uint8Array(args.buf.buffer, 0, len), path.length);
      const res = await this.submit(op, { ...args, buf, len: path.length + len, devPathLen: path.length });
      if (args.buf) new Uint8Array(args.buf.buffer, 0, len).set(bytes.subarray(path.length, path.length + len));
      return res;
    } finally {
      buf.free();
    }
  }

  private submit(op: number, args: CommandArgs): Promise<number> {
    let sqe = this.ring.getSqe();
    if (sqe < 0) {
      this.ring.submit();
      sqe = this.ring.getSqe();
      if (sqe < 0) return Promise.reject(new SysError('io_uring_enter', 16 /* EBUSY */));
    }
    const w = prepUringCmd(this.ring, sqe, this.fd, op);
    const u32 = this.ring.sqe32;
    const base = w << 2;
    // struct ublksrv_ctrl_cmd in sqe.cmd[]
    u32[(base + U.ublksrv_ctrl_cmd.dev_id) >> 2] = args.devId;
    const u16 = this.ring.sqe16;
    u16[(base + U.ublksrv_ctrl_cmd.queue_id) >> 1] = args.queueId ?? 0xffff;
    u16[(base + U.ublksrv_ctrl_cmd.len) >> 1] = args.len ?? 0;
    u16[(base + U.ublksrv_ctrl_cmd.dev_path_len) >> 1] = args.devPathLen ?? 0;
    putU64(u32, (base + U.ublksrv_ctrl_cmd.addr) >> 2, args.buf ? args.buf.addr : 0);
    putU64(u32, (base + U.ublksrv_ctrl_cmd.data) >> 2, args.data ?? 0);
    const id = (this.seq = (this.seq + 1) >>> 0);
    sqeSetData(this.ring, sqe, id, 0);
    sqeSetFlags(this.ring, sqe, IOSQE_ASYNC);
    const promise = new Promise<number>((resolve) => this.waiters.set(id, resolve));
    const r = this.ring.submit();
    if (r < 0) {
      this.waiters.delete(id);
      return Promise.reject(new SysError('io_uring_enter', -r));
    }
    this.watch();
    this.reap();
    return promise;
  }

  private watch(): void {
    if (this.poller === null) this.poller = pollReadable(this.ring.fd, () => this.reap());
    this.poller.ref();
  }

  private reap(): void {
    const n = this.ring.cqReady();
    for (let i = 0; i < n; i++) {
      const id = this.ring.cqeDataLo(i);
      const res = this.ring.cqeRes(i);
      const w = this.waiters.get(id);
      if (w) {
        this.waiters.delete(id);
        w(res);
      }
    }
    this.ring.cqAdvance(n);
    // An idle control ring must not keep the process alive.
    if (this.waiters.size === 0) this.poller?.unref();
  }

  /** UBLK_U_CMD_GET_FEATURES: the UBLK_F_* bits this kernel supports. */
  async getFeatures(): Promise<number> {
    return this.withBuffer(8, async (buf) => {
      await this.command(U.UBLK_U_CMD_GET_FEATURES, { devId: 0xffffffff, buf, len: 8 });
      return getU64(new DataView(buf.buffer), 0);
    });
  }

  /** UBLK_U_CMD_ADD_DEV; devId -1 lets the kernel choose. Returns the device as created. */
  async addDev(info: Partial<DevInfo> & { devId: number }): Promise<DevInfo> {
    const size = U.ublksrv_ctrl_dev_info.SIZE;
    return this.withBuffer(size, async (buf) => {
      const dv = new DataView(buf.buffer);
      encodeDevInfo(dv, { ...info, devId: info.devId >>> 0 });
      await this.command(U.UBLK_U_CMD_ADD_DEV, { devId: info.devId >>> 0, buf, len: size });
      const added = decodeDevInfo(dv);
      if (added.flags & U.UBLK_F_UNPRIVILEGED_DEV) this.unprivileged.add(added.devId);
      return added;
    });
  }

  /**
   * GET_DEV_INFO. ublk_drv refuses it without the char device path for an
   * unprivileged device (EINVAL; EPERM to a user without CAP_SYS_ADMIN),
   * which GET_DEV_INFO2 with the path answers; such a device is then known
   * as unprivileged to every later command.
   */
  async getDevInfo(devId: number): Promise<DevInfo> {
    const size = U.ublksrv_ctrl_dev_info.SIZE;
    return this.withBuffer(size, async (buf) => {
      try {
        await this.command(U.UBLK_U_CMD_GET_DEV_INFO, { devId, buf, len: size });
      } catch (e) {
        const code = (e as UblkCommandError).code;
        if (this.unprivileged.has(devId) || (code !== 'EINVAL' && code !== 'EPERM')) throw e;
        this.unprivileged.add(devId);
        try {
          await this.command(U.UBLK_U_CMD_GET_DEV_INFO2, { devId, buf, len: size });
        } catch (e2) {
          this.unprivileged.delete(devId);
          throw e2; // e.g. EACCES: someone else's unprivileged device
        }
      }
      const info = decodeDevInfo(new DataView(buf.buffer));
      if (!(info.flags & U.UBLK_F_UNPRIVILEGED_DEV)) this.unprivileged.delete(devId);
      return info;
    });
  }

  async setParams(devId: number, params: Params): Promise<void> {
    const size = U.ublk_params.SIZE;
    await this.withBuffer(size, async (buf) => {
      encodeParams(new DataView(buf.buffer), params);
      await this.command(U.UBLK_U_CMD_SET_PARAMS, { devId, buf, len: size });
    });
  }

  async getParams(devId: number): Promise<Params> {
    const size = U.ublk_params.SIZE;
    return this.withBuffer(size, async (buf) => {
      const dv = new DataView(buf.buffer);
      dv.setUint32(U.ublk_params.len, size, true);
      await this.command(U.UBLK_U_CMD_GET_PARAMS, { devId, buf, len: size });
      return decodeParams(dv);
    });
  }

  /**
   * GET_QUEUE_AFFINITY: the CPUs whose requests blk-mq maps to queue qId, as
   * a cpu_set_t bit mask (CPU n is bit n % 8 of byte n / 8), for
   * sched_setaffinity of that queue's thread.
   */
  async getQueueAffinity(devId: number, qId: number): Promise<Uint8Array> {
    return this.withBuffer(CPU_SET_BYTES, async (buf) => {
      await this.command(U.UBLK_U_CMD_GET_QUEUE_AFFINITY, { devId, data: qId, buf, len: CPU_SET_BYTES });
      return new Uint8Array(buf.buffer.slice(0, CPU_SET_BYTES));
    });
  }

  /** START_DEV: returns once every tag is fetched and the disk is added. */
  async startDev(devId: number, daemonPid: number): Promise<void> {
    await this.command(U.UBLK_U_CMD_START_DEV, { devId, data: daemonPid });
  }

  async stopDev(devId: number): Promise<void> {
    await this.command(U.UBLK_U_CMD_STOP_DEV, { devId });
  }

  /** DEL_DEV: waits until /dev/ublkc<id> is closed by every holder. */
  async delDev(devId: number): Promise<void> {
    await this.command(U.UBLK_U_CMD_DEL_DEV, { devId });
  }

  async startUserRecovery(devId: number): Promise<void> {
    await this.command(U.UBLK_U_CMD_START_USER_RECOVERY, { devId });
  }

  async endUserRecovery(devId: number, daemonPid: number): Promise<void> {
    await this.command(U.UBLK_U_CMD_END_USER_RECOVERY, { devId, data: daemonPid });
  }

  private async withBuffer<T>(size: number, use: (buf: NativeMemory) => Promise<T>): Promise<T> {
    const buf = NativeMemory.aligned(size, 64);
    try {
      return await use(buf);
    } finally {
      buf.free();
    }
  }
}
