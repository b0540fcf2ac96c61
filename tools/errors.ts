/** Turns any error into the one line the CLI prints after `ublk: <command>: `. */
import { SysError } from '../sys/error.js';
import { UBLK_CONTROL_PATH, UblkCommandError } from '../ublk/control.js';
import { isRoot } from './cli-util.js';

export function describeError(e: unknown, ctx: { devId?: number } = {}): string {
  if (e instanceof UblkCommandError) {
    const id = e.devId === 0xffffffff ? ctx.devId : e.devId;
    switch (`${e.syscall} ${e.code}`) {
      case 'ADD_DEV EEXIST':
        return `device ${id} already exists`;
      case 'ADD_DEV ENOSPC':
        return 'no free ublk device id';
      case 'ADD_DEV EACCES':
        return 'too many ublk devices (see /sys/module/ublk_drv/parameters/ublks_max)';
      case 'GET_DEV_INFO ENODEV':
      case 'DEL_DEV ENODEV':
      case 'STOP_DEV ENODEV':
      case 'START_USER_RECOVERY ENODEV':
        return `device ${id} does not exist`;
      case 'START_USER_RECOVERY EBUSY':
        return `device ${id} is not waiting for recovery (its daemon is alive, or its files are still open)`;
      case 'START_USER_RECOVERY EINVAL':
        return `device ${id} was not added with --recoverable`;
    }
    return `${e.syscall} of device ${id}: ${e.message.slice(e.message.indexOf(':') + 2)}`;
  }
  if (e instanceof SysError && e.path === UBLK_CONTROL_PATH) {
    if (e.code === 'ENOENT') return `${UBLK_CONTROL_PATH}: No such file or directory (is ublk_drv loaded? try: modprobe ublk_drv)`;
    if (e.code === 'EACCES' || e.code === 'EPERM') {
      return isRoot()
        ? `${UBLK_CONTROL_PATH}: Permission denied (ublk devices need root)`
        : `${UBLK_CONTROL_PATH}: Permission denied (a user's --unprivileged devices need udev's rule: ublk install-udev-rules; others need root)`;
    }
  }
  if (e instanceof Error) return e.message;
  return String(e);
}
