/**
 * The NBD protocol (github.com/NetworkBlockDevice/nbd, doc/proto.md): its
 * numbers, and the client side of the fixed newstyle handshake, run with
 * blocking calls on a connected socket (at `ublk add`, and when a queue
 * connects or reconnects; never on the IO path). All integers on the wire
 * are big-endian.
 */
import { recvAll, sendAll } from '../../sys/socket.js';
import { TargetError } from '../target.js';

export const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
const CLISERV_MAGIC = 0x00420281861253n; // the oldstyle handshake's second word
const OPT_REPLY_MAGIC = 0x0003e889045565a9n;

// Handshake flags (server) and client flags.
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// Options and option replies.
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_REP_ACK = 1;
export const NBD_REP_INFO = 3;
/** Error replies have the top bit set (the values below are kept unsigned, as readUInt32BE reads them). */
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = (NBD_REP_FLAG_ERROR | 1) >>> 0;
export const NBD_REP_ERR_POLICY = (NBD_REP_FLAG_ERROR | 2) >>> 0;
export const NBD_REP_ERR_TLS_REQD = (NBD_REP_FLAG_ERROR | 5) >>> 0;
export const NBD_REP_ERR_UNKNOWN = (NBD_REP_FLAG_ERROR | 6) >>> 0;
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_BLOCK_SIZE = 3;

// Transmission flags (per export).
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

// Requests.
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_REQUEST_SIZE = 28;
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;

// Replies.
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_SIMPLE_REPLY_SIZE = 16;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const NBD_STRUCTURED_REPLY_SIZE = 20;
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) | 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2;
/** Error chunk types have bit 15 set. */
export const NBD_REPLY_TYPE_IS_ERROR = 1 << 15;

/** The errors NBD defines are Linux's errno values; anything else is EIO. */
const NBD_ERRNOS = new Set([1, 5, 12, 22, 28, 75, 95, 108]);
export function nbdErrno(error: number): number {
  return NBD_ERRNOS.has(error) ? error : 5;
}

/** What the server said about an export. */
export interface ExportInfo {
  size: number;
  /** Transmission flags (NBD_FLAG_*). */
  flags: number;
  /** Block size constraints (NBD_INFO_BLOCK_SIZE), or the protocol's defaults: 1, 4096, 32 MiB. */
  minBlock: number;
  preferredBlock: number;
  maxPayload: number;
  /** Structured replies were negotiated. */
  structured: boolean;
}

/** The server broke the protocol or refused: `ublk add` prints the message. */
export class NbdError extends TargetError {}

const MAX_OPTION_REPLY = 64 * 1024;

/** The handshake over a blocking socket; every step is bounded by the socket's timeouts. */
class Handshake {
  constructor(
    private readonly fd: number,
    readonly where: string,
  ) {}

  recv(n: number, what: string): Buffer {
    const buf = Buffer.alloc(n);
    if (recvAll(this.fd, buf) < n) throw new NbdError(`${this.where}: the server closed the connection (${what})`);
    return buf;
  }

  send(b: Buffer): void {
    sendAll(this.fd, b);
  }

  option(opt: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(data.length, 12);
    this.send(Buffer.concat([h, data]));
  }

  /** One option reply: its type and data (checked to answer `opt`). */
  reply(opt: number): { type: number; data: Buffer } {
    const h = this.recv(20, 'option reply');
    if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new NbdError(`${this.where}: not an NBD option reply`);
    if (h.readUInt32BE(8) !== opt) throw new NbdError(`${this.where}: the server answered option ${h.readUInt32BE(8)} to option ${opt}`);
    const len = h.readUInt32BE(16);
    if (len > MAX_OPTION_REPLY) throw new NbdError(`${this.where}: an option reply of ${len} bytes`);
    return { type: h.readUInt32BE(12), data: len > 0 ? this.recv(len, 'option reply') : Buffer.alloc(0) };
  }
}

/**
 * Runs the fixed newstyle handshake for `exportName` on connected socket
 * `fd`. `go`: end it with NBD_OPT_GO (the socket then carries requests);
 * otherwise ask with NBD_OPT_INFO and leave with NBD_OPT_ABORT (a probe at
 * `ublk add`). Servers without GO/INFO get NBD_OPT_EXPORT_NAME (a probe
 * then disconnects with NBD_CMD_DISC). Throws NbdError with one line.
 */
export function handshake(fd: number, exportName: string, where: string, go: boolean): ExportInfo {
  const h = new Handshake(fd, where);
  const hello = h.recv(18, 'greeting');
  if (hello.readBigUInt64BE(0) !== NBDMAGIC) throw new NbdError(`${where}: not an NBD server`);
  const second = hello.readBigUInt64BE(8);
  if (second === CLISERV_MAGIC) throw new NbdError(`${where}: an oldstyle NBD server (only newstyle servers are supported)`);
  if (second !== IHAVEOPT) throw new NbdError(`${where}: not an NBD server`);
  const serverFlags = hello.readUInt16BE(16);
  const noZeroes = (serverFlags & NBD_FLAG_NO_ZEROES) !== 0;
  const client = Buffer.alloc(4);
  client.writeUInt32BE((serverFlags & NBD_FLAG_FIXED_NEWSTYLE ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? NBD_FLAG_C_NO_ZEROES : 0));
  h.send(client);
  const name = Buffer.from(exportName, 'utf8');
  // Without fixed newstyle a server may drop the connection on any option but EXPORT_NAME.
  if ((serverFlags & NBD_FLAG_FIXED_NEWSTYLE) === 0) return exportNameOption(h, name, noZeroes, go, false);

  h.option(NBD_OPT_STRUCTURED_REPLY);
  const structured = answer(h, NBD_OPT_STRUCTURED_REPLY, exportName, where) !== null;

  const opt = go ? NBD_OPT_GO : NBD_OPT_INFO;
  const data = Buffer.alloc(4 + name.length + 4);
  data.writeUInt32BE(name.length, 0);
  name.copy(data, 4);
  data.writeUInt16BE(1, 4 + name.length); // one info request:
  data.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 6 + name.length);
  h.option(opt, data);
  const info: Partial<ExportInfo> = { minBlock: 1, preferredBlock: 4096, maxPayload: 32 * 2 ** 20, structured };
  for (;;) {
    const r = h.reply(opt);
    if (r.type === NBD_REP_ERR_UNSUP) return exportNameOption(h, name, noZeroes, go, structured);
    if (r.type & NBD_REP_FLAG_ERROR) refused(r.type, r.data, exportName, where);
    if (r.type === NBD_REP_ACK) break;
    if (r.type !== NBD_REP_INFO || r.data.length < 2) continue;
    const kind = r.data.readUInt16BE(0);
    if (kind === NBD_INFO_EXPORT && r.data.length >= 12) {
      info.size = Number(r.data.readBigUInt64BE(2));
      info.flags = r.data.readUInt16BE(10);
    } else if (kind === NBD_INFO_BLOCK_SIZE && r.data.length >= 14) {
      info.minBlock = r.data.readUInt32BE(2);
      info.preferredBlock = r.data.readUInt32BE(6);
      info.maxPayload = r.data.readUInt32BE(10);
    }
  }
  if (info.size === undefined || info.flags === undefined) throw new NbdError(`${where}: the server did not say the export's size`);
  if (!go) h.option(NBD_OPT_ABORT); // its reply, if any, is not waited for
  return info as ExportInfo;
}

/** ACK → the data; ERR_UNSUP (and other soft refusals of an optional option) → null. */
function answer(h: Handshake, opt: number, exportName: string, where: string): Buffer | null {
  const r = h.reply(opt);
  if (r.type === NBD_REP_ACK) return r.data;
  if (r.type === NBD_REP_ERR_TLS_REQD) refused(r.type, r.data, exportName, where);
  return null;
}

function refused(type: number, data: Buffer, exportName: string, where: string): never {
  const said = data.length > 0 ? `: ${data.toString('utf8').replace(/[\r\n]+/g, ' ').trim()}` : '';
  switch (type) {
    case NBD_REP_ERR_UNKNOWN:
      throw new NbdError(`${where}: the server has no export '${exportName}'${said}`);
    case NBD_REP_ERR_TLS_REQD:
      throw new NbdError(`${where}: the server requires TLS, which ublk-ts does not speak${said}`);
    case NBD_REP_ERR_POLICY:
      throw new NbdError(`${where}: the server refused export '${exportName}' by policy${said}`);
    default:
      throw new NbdError(`${where}: the server refused export '${exportName}' (error ${(type & ~NBD_REP_FLAG_ERROR) >>> 0})${said}`);
  }
}

/** NBD_OPT_EXPORT_NAME, for servers without GO: the server answers with the export or closes. */
function exportNameOption(h: Handshake, name: Buffer, noZeroes: boolean, go: boolean, structured: boolean): ExportInfo {
  h.option(NBD_OPT_EXPORT_NAME, name);
  // A server without the export closes the connection: the only answer it has.
  const a = h.recv(noZeroes ? 10 : 134, `after export '${name.toString('utf8')}' was asked for: has it one of that name?`);
  const info: ExportInfo = {
    size: Number(a.readBigUInt64BE(0)),
    flags: a.readUInt16BE(8),
    minBlock: 1,
    preferredBlock: 4096,
    maxPayload: 32 * 2 ** 20,
    structured,
  };
  if (!go) h.send(request(NBD_CMD_DISC, 0, 0, 0, 0));
  return info;
}

/** One request header (28 bytes): for the handshake's NBD_CMD_DISC and for tests. */
export function request(type: number, flags: number, cookie: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(NBD_REQUEST_SIZE);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(BigInt(cookie), 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}
