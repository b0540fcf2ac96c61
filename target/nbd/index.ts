/**
 * The nbd target: /dev/ublkbN served by an NBD server (nbdkit, qemu-nbd,
 * nbd-server …) over TCP or a unix socket. `open` asks the server about
 * the export once (NBD_OPT_INFO) to describe the device; each queue then
 * opens its own connection (queue.ts), or the device gets one queue when
 * the server does not allow several connections (NBD_FLAG_CAN_MULTI_CONN).
 */
import { lookup } from 'node:dns/promises';
import { SysError } from '../../sys/error.js';
import * as native from '../../sys/native.js';
import { type StreamAddress, addressText, connectStream } from '../../sys/socket.js';
import { type Target, type TargetDevice, TargetError } from '../target.js';
import {
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_ROTATIONAL,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  type ExportInfo,
  handshake,
} from './protocol.js';
import { CONNECT_TIMEOUT_MS, CONN_FAILED, CONN_UP, CONN_RECONNECTING, NS, NbdQueue, type NbdQueueData } from './queue.js';
import { type NbdUri, formatNbdUri, parseNbdUri } from './uri.js';

export interface NbdOptions {
  /** nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH */
  url: string;
  /** Seconds without a reply before a connection counts as failed (default 30; 0: wait for ever). */
  timeout?: number;
  /** Hold IO and reconnect when a connection fails, instead of failing the IO with EIO. */
  reconnect?: boolean;
  readOnly?: boolean;
}

export const DEFAULT_TIMEOUT_S = 30;
/** NBD lengths are u32 bytes: the most one TRIM or WRITE_ZEROES can cover, a 4K multiple. */
const MAX_RANGE_SECTORS = (2 ** 32 - 4096) / 512;

const nbd: Target<NbdOptions> = {
  name: 'nbd',
  // Every request completes from a CQE on the queue ring.
  sync: true,
  async open(options): Promise<TargetDevice> {
    if (typeof options.url !== 'string' || options.url === '') throw new TargetError('the nbd target needs a server (--url nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)');
    const timeout = options.timeout ?? DEFAULT_TIMEOUT_S;
    if (!Number.isInteger(timeout) || timeout < 0 || timeout > 3600) throw new TargetError(`timeout must be whole seconds from 0 to 3600, not ${String(timeout)}`);
    const uri = parseNbdUri(options.url);
    const uriText = formatNbdUri(uri);
    const to = await resolve(uri, uriText);
    const info = probe(to, uri.exportName, uriText);

    const warnings: string[] = [];
    if (info.minBlock > 4096 || (info.minBlock & (info.minBlock - 1)) !== 0) {
      throw new TargetError(`${uriText}: the server's minimum block size ${info.minBlock} is not a power of two up to 4096`);
    }
    const lbs = Math.max(512, info.minBlock);
    const size = info.size - (info.size % lbs);
    if (size <= 0) throw new TargetError(`${uriText}: the export is ${info.size} bytes, less than one ${lbs}-byte block`);
    if (size !== info.size) warnings.push(`the export's last ${info.size - size} bytes are not a whole ${lbs}-byte block and are not served`);
    const maxIoSize = info.maxPayload - (info.maxPayload % 4096);
    if (maxIoSize < 4096) throw new TargetError(`${uriText}: the server takes at most ${info.maxPayload} bytes per request, less than 4K`);
    const serverReadOnly = (info.flags & NBD_FLAG_READ_ONLY) !== 0;
    const readOnly = options.readOnly === true || serverReadOnly;
    if (serverReadOnly && options.readOnly !== true) warnings.push('the export is read-only, so is the device');
    const multiConn = (info.flags & NBD_FLAG_CAN_MULTI_CONN) !== 0;
    const trim = !readOnly && (info.flags & NBD_FLAG_SEND_TRIM) !== 0;
    const zeroes = !readOnly && (info.flags & NBD_FLAG_SEND_WRITE_ZEROES) !== 0;
    const queueData: NbdQueueData = {
      to,
      uri: uriText,
      exportName: uri.exportName,
      size: info.size,
      flags: info.flags,
      readOnly,
      timeoutMs: timeout * 1000,
      reconnect: options.reconnect === true,
    };
    return {
      size,
      logicalBlockSize: lbs,
      physicalBlockSize: Math.min(4096, Math.max(lbs, info.preferredBlock & -info.preferredBlock)),
      readOnly,
      rotational: (info.flags & NBD_FLAG_ROTATIONAL) !== 0,
      volatileCache: !readOnly && (info.flags & NBD_FLAG_SEND_FLUSH) !== 0,
      fua: !readOnly && (info.flags & NBD_FLAG_SEND_FUA) !== 0,
      discard: trim || zeroes ? { granularity: 4096, maxDiscardSectors: trim ? MAX_RANGE_SECTORS : 0, maxWriteZeroesSectors: zeroes ? MAX_RANGE_SECTORS : 0 } : undefined,
      maxIoSize,
      queueLimit: multiConn ? undefined : { max: 1, reason: 'the NBD server does not allow more than one connection (no multi-conn)' },
      info: { url: uriText, connections: multiConn ? 'one per queue' : 'one' },
      warnings,
      queueData,
      stats: nbdStats,
    };
  },
  createQueue(ctx, data) {
    return new NbdQueue(ctx, data as NbdQueueData);
  },
};

export default nbd;

/** The URI's address, its host name resolved once here (reconnects use the same address). */
async function resolve(uri: NbdUri, uriText: string): Promise<StreamAddress> {
  if ('path' in uri.to) return { path: uri.to.path };
  try {
    const a = await lookup(uri.to.host);
    return { family: a.family === 6 ? 6 : 4, address: a.address, port: uri.to.port };
  } catch (e) {
    throw new TargetError(`${uriText}: cannot resolve host ${uri.to.host} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
}

/** One connection that asks about the export and leaves: what `ublk add` checks before it makes a device. */
function probe(to: StreamAddress, exportName: string, uriText: string): ExportInfo {
  let fd: number;
  try {
    fd = connectStream(to, CONNECT_TIMEOUT_MS);
  } catch (e) {
    const why = e instanceof SysError ? native.strerror(-e.errno) : (e as Error).message;
    throw new TargetError(`${uriText}: cannot connect to ${addressText(to)}: ${why}`);
  }
  try {
    return handshake(fd, exportName, uriText, false);
  } catch (e) {
    if (e instanceof SysError) throw new TargetError(`${uriText}: the handshake failed: ${native.strerror(-e.errno)}`);
    throw e;
  } finally {
    native.close(fd);
  }
}

const STATE_NAMES: Record<number, string> = { [CONN_UP]: 'up', [CONN_RECONNECTING]: 'reconnecting', [CONN_FAILED]: 'failed' };

/** What `ublk stats` shows: each queue's connection. */
function nbdStats(buffers: (SharedArrayBuffer | null)[]): Record<string, unknown> {
  return {
    nbd: buffers.map((b) => {
      if (b === null) return null;
      const s = new Float64Array(b);
      return { state: STATE_NAMES[s[NS.state]] ?? 'unknown', sentBytes: s[NS.sentBytes], receivedBytes: s[NS.receivedBytes], reconnects: s[NS.reconnects] };
    }),
  };
}
