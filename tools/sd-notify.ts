/**
 * systemd's readiness protocol (sd_notify(3)), in TypeScript: one datagram
 * of NEWLINE-separated KEY=VALUE lines to the unix socket named by
 * $NOTIFY_SOCKET ('@' for the abstract namespace). A unit of Type=notify
 * counts the service started only once READY=1 arrives.
 */
import { close } from '../sys/file.js';
import { sendToUnix, unixDgramSocket } from '../sys/socket.js';

/**
 * Sends `lines` (e.g. ['READY=1', 'STATUS=…']) when the process runs under
 * systemd with a notification socket; returns whether it did. Throws a
 * SysError when the socket is named but the send fails.
 */
export function sdNotify(lines: string[], socketPath = process.env.NOTIFY_SOCKET): boolean {
  if (!socketPath) return false;
  const fd = unixDgramSocket();
  try {
    sendToUnix(fd, Buffer.from(lines.join('\n') + '\n'), socketPath);
  } finally {
    close(fd);
  }
  return true;
}
