/**
 * The errno values the project names (Linux's, as Node's os.constants.errno
 * has them). System calls and CQEs return them negated.
 */
import { constants } from 'node:os';

export const { EINTR, EIO, EBADF, EAGAIN, EBUSY, ENOSPC, EOPNOTSUPP, EISCONN, EINPROGRESS, ETIMEDOUT, EACCES, ENOENT, EPERM, EROFS } = constants.errno;
