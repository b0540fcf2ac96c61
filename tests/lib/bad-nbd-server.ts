/**
 * A server that breaks the NBD handshake in one way, in its own process
 * (the nbd target's handshake blocks the thread it runs in): on unix
 * socket PATH when given, else on a port of 127.0.0.1 that it prints.
 * Serves until killed.
 *   node bad-nbd-server.js MODE [PATH]
 *   close   closes every connection at once
 *   junk    answers like an HTTP server
 *   greet   sends the newstyle greeting, then closes before any option
 *   cut     serves a 16 MiB memory export, but cuts the connection in the
 *           middle of the first read of 8 KiB or more (after the chunk
 *           header and half the data); structured replies are agreed on
 *           even-numbered connections only, so a reconnect meets the other
 *           kind of reply
 *   drop2   serves a 16 MiB memory export with structured replies, but
 *           drops the connection instead of answering the first two reads
 *           of 8 KiB or more
 *   overlap serves a 16 MiB memory export with structured replies, but
 *           answers a read of 8 KiB or more with its first half twice
 *           (two chunks that overlap) and then a final NONE chunk
 *   reorder serves a 16 MiB memory export with structured replies, and
 *           answers a read of 8 KiB or more in four chunks, its quarters
 *           in the order 3rd, 1st, 4th, 2nd (legal: chunks may come in any
 *           order, the one marked DONE last)
 *   dup     serves a 16 MiB memory export with simple replies, but sends
 *           the reply to the connection's first request again just before
 *           the reply to its second (a stray reply the client must not take
 *           for the second request's, whose cookie names the same tag)
 *   unasked serves a 16 MiB memory export with structured replies, but
 *           answers a write with a block status chunk (marked DONE), a
 *           type the client never asked for
 */
import { type Socket, createServer } from 'node:net';

const OPT_REPLY_MAGIC = 0x0003e889045565a9n;
const SIZE = 16 * 1024 * 1024;
const memory = Buffer.alloc(SIZE);
let connections = 0;
let cut = false;
let drops = 0;
let firstReply: Buffer | null = null;
let replies = 0;

const DONE = 1;
const TYPE_NONE = 0;
const TYPE_OFFSET_DATA = 1;
const TYPE_BLOCK_STATUS = 5;

/** A structured reply chunk: its 20-byte header (magic, flags, type, cookie, length), then `payload`. */
function chunk(cookie: Buffer, flags: number, type: number, ...payload: Buffer[]): Buffer {
  const body = Buffer.concat(payload);
  const h = Buffer.alloc(20);
  h.writeUInt32BE(0x668e33ef, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  cookie.copy(h, 8);
  h.writeUInt32BE(body.length, 16);
  return Buffer.concat([h, body]);
}

/** An OFFSET_DATA chunk: `data` is the export's bytes at `offset`. */
function dataChunk(cookie: Buffer, flags: number, offset: number, data: Buffer): Buffer {
  const at = Buffer.alloc(8);
  at.writeBigUInt64BE(BigInt(offset));
  return chunk(cookie, flags, TYPE_OFFSET_DATA, at, data);
}

/** A small NBD server: fixed newstyle, NBD_OPT_INFO/GO, READ/WRITE/FLUSH/DISC. */
function serveNbd(s: Socket, structured: boolean): void {
  let buf = Buffer.alloc(0);
  let phase: 'flags' | 'options' | 'transmission' = 'flags';
  const optReply = (opt: number, type: number, data = Buffer.alloc(0)) => {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(OPT_REPLY_MAGIC, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(type >>> 0, 12);
    h.writeUInt32BE(data.length, 16);
    s.write(Buffer.concat([h, data]));
  };
  const simple = (cookie: Buffer, data = Buffer.alloc(0)) => {
    const h = Buffer.alloc(16);
    h.writeUInt32BE(0x67446698, 0);
    cookie.copy(h, 8);
    if (mode === 'dup' && ++replies === 1) firstReply = h;
    if (mode === 'dup' && replies === 2) s.write(firstReply!);
    s.write(Buffer.concat([h, data]));
  };
  s.write(Buffer.from('4e42444d4147494349484156454f50540003', 'hex')); // fixed newstyle, no zeroes
  s.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (phase === 'flags') {
        if (buf.length < 4) return;
        buf = buf.subarray(4);
        phase = 'options';
      } else if (phase === 'options') {
        if (buf.length < 16 || buf.length < 16 + buf.readUInt32BE(12)) return;
        const opt = buf.readUInt32BE(8);
        buf = buf.subarray(16 + buf.readUInt32BE(12));
        if (opt === 8) optReply(opt, structured ? 1 : 0x80000001); // STRUCTURED_REPLY: ACK or ERR_UNSUP
        else if (opt === 6 || opt === 7) {
          const info = Buffer.alloc(12); // NBD_INFO_EXPORT: size, flags HAS_FLAGS | SEND_FLUSH
          info.writeBigUInt64BE(BigInt(SIZE), 2);
          info.writeUInt16BE(1 | 4, 10);
          optReply(opt, 3, info);
          optReply(opt, 1);
          if (opt === 7) phase = 'transmission';
        } else if (opt === 2) return void s.end();
        else optReply(opt, 0x80000001);
      } else {
        if (buf.length < 28) return;
        const type = buf.readUInt16BE(6);
        const cookie = Buffer.from(buf.subarray(8, 16));
        const offset = Number(buf.readBigUInt64BE(16));
        const length = buf.readUInt32BE(24);
        if (type === 1 && buf.length < 28 + length) return;
        if (type === 1) memory.set(buf.subarray(28, 28 + length), offset);
        buf = buf.subarray(type === 1 ? 28 + length : 28);
        if (type === 2) return void s.end();
        if (type === 0 && length >= 8192 && mode === 'drop2' && drops < 2) {
          drops++;
          return void s.destroy();
        }
        if (type === 1 && mode === 'unasked') {
          const status = Buffer.alloc(12); // context id, one descriptor (length, flags)
          status.writeUInt32BE(length, 4);
          s.write(chunk(cookie, DONE, TYPE_BLOCK_STATUS, status));
        } else if (type !== 0) simple(cookie);
        else if (!structured) simple(cookie, memory.subarray(offset, offset + length));
        else {
          const data = memory.subarray(offset, offset + length);
          if (mode === 'overlap' && length >= 8192) {
            const half = dataChunk(cookie, 0, offset, data.subarray(0, length / 2));
            s.write(Buffer.concat([half, half, chunk(cookie, DONE, TYPE_NONE)]));
            continue;
          }
          if (mode === 'reorder' && length >= 8192) {
            const q = length / 4;
            for (const [i, part] of [2, 0, 3, 1].entries()) {
              s.write(dataChunk(cookie, i === 3 ? DONE : 0, offset + part * q, data.subarray(part * q, (part + 1) * q)));
            }
            continue;
          }
          const whole = dataChunk(cookie, DONE, offset, data);
          if (mode === 'cut' && !cut && length >= 8192) {
            cut = true;
            // The chunk header with its offset (28 bytes) and half the data.
            s.write(whole.subarray(0, 28 + length / 2), () => s.destroy());
            return;
          }
          s.write(whole);
        }
      }
    }
  });
}

const mode = process.argv[2];
const server = createServer((s) => {
  s.on('error', () => undefined); // a client that gives up resets the connection: not this server's failure
  if (mode === 'close') s.destroy();
  else if (mode === 'junk') s.end('HTTP/1.1 400 Bad Request\r\n\r\n');
  else if (mode === 'greet') s.end(Buffer.from('4e42444d4147494349484156454f50540001', 'hex')); // NBDMAGIC IHAVEOPT, fixed newstyle
  else if (mode === 'cut') serveNbd(s, ++connections % 2 === 0);
  else if (mode === 'dup') serveNbd(s, false);
  else if (mode === 'drop2' || mode === 'overlap' || mode === 'reorder' || mode === 'unasked') serveNbd(s, true);
});
const path = process.argv[3];
if (path !== undefined) server.listen(path);
else server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as { port: number }).port}\n`));
