// Pins struct flock and the OFD lock commands against
// include/uapi/asm-generic/fcntl.h (x86_64: off_t is 64 bits): a wrong
// offset would lock the wrong bytes, and qemu's image lock would not see us.
import t from 'tap';
import { F_OFD_GETLK, F_OFD_SETLK, F_RDLCK, F_UNLCK, F_WRLCK, struct_flock } from '../../sys/file.js';

t.test('struct flock is 32 bytes with the uapi offsets', async (t) => {
  t.same({ ...struct_flock }, { SIZE: 32, l_type: 0, l_whence: 2, l_start: 8, l_len: 16, l_pid: 24 });
});

t.test('lock types and OFD commands', async (t) => {
  t.same([F_RDLCK, F_WRLCK, F_UNLCK, F_OFD_GETLK, F_OFD_SETLK], [0, 1, 2, 36, 37]);
});
