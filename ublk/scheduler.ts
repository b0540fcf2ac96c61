/** The IO scheduler (elevator) of /dev/ublkbN, in sysfs. */
import { readFileSync, writeFileSync } from 'node:fs';

/** `scheduler` value that keeps the elevator the kernel gave the disk. */
export const KERNEL_SCHEDULER = 'kernel';

/**
 * Writes the disk's IO scheduler (elevator). ublk_drv leaves a one-queue
 * disk to the kernel's default, mq-deadline, where the kernel loop driver
 * asks for none (BLK_MQ_F_NO_SCHED_BY_DEFAULT): the storage behind the
 * target schedules its own IO, and a second elevator in front of it costs
 * CPU per request and holds requests back from the queue's batch.
 */
export function setScheduler(id: number, name: string): void {
  const path = `/sys/block/ublkb${id}/queue/scheduler`;
  try {
    writeFileSync(path, name);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
    let have = '';
    try {
      have = readFileSync(path, 'utf8').replace(/[[\]]/g, '').trim();
    } catch {
      // only the list in the message is lost
    }
    throw new Error(`IO scheduler '${name}' is not available for /dev/ublkb${id}${have ? ` (it has: ${have})` : ''}`);
  }
}
