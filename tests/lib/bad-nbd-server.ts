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
 */
import { type Socket, createServer } from 'node:net';

const OPT_REPLY_MAGIC = 0x0003e889045565a9n;
const SIZE = 16 * 1024 * 1024;
const memory = Buffer.alloc(SIZE);
let connections = 0;
let cut = false;

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
        if (type !== 0) simple(cookie);
        else if (!structured) simple(cookie, memory.subarray(offset, offset + length));
        else {
          const h = Buffer.alloc(28);
          h.writeUInt32BE(0x668e33ef, 0);
          h.writeUInt16BE(1, 4); // DONE
          h.writeUInt16BE(1, 6); // OFFSET_DATA
          cookie.copy(h, 8);
          h.writeUInt32BE(8 + length, 16);
          h.writeBigUInt64BE(BigInt(offset), 20);
          const data = memory.subarray(offset, offset + length);
          if (!cut && length >= 8192) {
            cut = true;
            s.write(Buffer.concat([h, data.subarray(0, length / 2)]), () => s.destroy());
            return;
          }
          s.write(Buffer.concat([h, data]));
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
});
const path = process.argv[3];
if (path !== undefined) server.listen(path);
else server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as { port: number }).port}\n`));
