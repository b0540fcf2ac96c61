/**
 * A server that breaks the NBD handshake in one way, in its own process
 * (the nbd target's handshake blocks the thread it runs in): on unix
 * socket PATH when given, else on a port of 127.0.0.1 that it prints.
 * Serves until killed.
 *   node bad-nbd-server.js MODE [PATH]
 *   close   closes every connection at once
 *   junk    answers like an HTTP server
 *   greet   sends the newstyle greeting, then closes before any option
 */
import { createServer } from 'node:net';

const mode = process.argv[2];
const server = createServer((s) => {
  s.on('error', () => undefined); // a client that gives up resets the connection: not this server's failure
  if (mode === 'close') s.destroy();
  else if (mode === 'junk') s.end('HTTP/1.1 400 Bad Request\r\n\r\n');
  else if (mode === 'greet') s.end(Buffer.from('4e42444d4147494349484156454f50540001', 'hex')); // NBDMAGIC IHAVEOPT, fixed newstyle
});
const path = process.argv[3];
if (path !== undefined) server.listen(path);
else server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as { port: number }).port}\n`));
