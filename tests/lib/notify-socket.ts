/**
 * A systemd-like notification socket for tests: a bound unix datagram
 * socket whose messages (sd_notify's KEY=VALUE lines) are polled.
 */
import { close } from '../../sys/file.js';
import { bindUnix, recvNow, unixDgramSocket } from '../../sys/socket.js';

export class NotifySocket {
  private readonly fd: number;
  private readonly buf = Buffer.alloc(4096);
  constructor(readonly path: string) {
    this.fd = unixDgramSocket(true);
    bindUnix(this.fd, path);
  }
  /** The messages queued now, each as its lines. */
  take(): string[][] {
    const out: string[][] = [];
    for (let n = recvNow(this.fd, this.buf); n >= 0; n = recvNow(this.fd, this.buf)) {
      out.push(this.buf.toString('utf8', 0, n).split('\n').filter((l) => l !== ''));
    }
    return out;
  }
  close(): void {
    close(this.fd);
  }
}
