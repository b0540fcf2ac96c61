import * as native from './native.js';
import { check } from './error.js';
import { EAGAIN } from './errno.js';

export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;

/** An eventfd(2) counter: `signal()` adds, `drain()` reads and resets. */
export class EventFd {
  readonly fd: number;
  private readonly word = new BigUint64Array(1);

  /** @param fd an eventfd someone else made (and closes), instead of a new one */
  constructor(flags = EFD_NONBLOCK, fd?: number) {
    this.fd = fd ?? check(native.eventfd(0, flags | EFD_CLOEXEC), 'eventfd');
  }

  signal(n = 1): void {
    this.word[0] = BigInt(n);
    check(native.write(this.fd, this.word, 8), 'write');
  }

  /** The counter's value (0 if it was zero and the fd is non-blocking), reset to 0. */
  drain(): number {
    const r = native.read(this.fd, this.word, 8);
    if (r === -EAGAIN) return 0;
    check(r, 'read');
    return Number(this.word[0]);
  }

  close(): void {
    check(native.close(this.fd), 'close');
  }
}
