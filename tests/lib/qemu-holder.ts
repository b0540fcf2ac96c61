/**
 * qemu-io holding an image open for writing, as a running qemu would:
 * resolves once its write lock (qemu's byte 101) is held, so a test that
 * opens the image next sees it. Stop it with kill().
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as file from '../../sys/file.js';

export async function holdWithQemuIo(image: string, format: 'qcow2' | 'raw'): Promise<ChildProcess> {
  const holder = spawn('qemu-io', ['-f', format, '-c', 'sleep 30000', image], { stdio: 'ignore' });
  // Polled with F_OFD_GETLK, which takes no lock: a lock of ours would make qemu-io refuse the image.
  const fd = file.open(image, file.O_RDONLY);
  try {
    for (let i = 0; i < 100 && !file.ofdByteLocked(fd, 101, file.F_WRLCK); i++) await new Promise((r) => setTimeout(r, 100));
  } finally {
    file.close(fd);
  }
  return holder;
}
