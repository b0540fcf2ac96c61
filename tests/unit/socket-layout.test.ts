// Pins struct sockaddr_un (include/uapi/linux/un.h) and the socket
// constants: a wrong offset or length would send systemd's READY=1 nowhere.
import t from 'tap';
import { AF_UNIX, MSG_DONTWAIT, MSG_NOSIGNAL, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, sockaddrUn, struct_sockaddr_un } from '../../sys/socket.js';

t.test('struct sockaddr_un is 110 bytes, the path at 2', async (t) => {
  t.same({ ...struct_sockaddr_un }, { SIZE: 110, sun_family: 0, sun_path: 2 });
  t.same([AF_UNIX, SOCK_DGRAM, SOCK_NONBLOCK, SOCK_CLOEXEC, MSG_DONTWAIT, MSG_NOSIGNAL], [1, 2, 0o4000, 0o2000000, 0x40, 0x4000]);
});

t.test('a path counts its NUL; an abstract name (@) starts with NUL and counts none', async (t) => {
  const p = sockaddrUn('/run/x');
  t.equal(p.len, 2 + 6 + 1);
  t.equal(p.addr.readUInt16LE(0), AF_UNIX);
  t.equal(p.addr.toString('latin1', 2, 9), '/run/x\0');
  const a = sockaddrUn('@sd/notify');
  t.equal(a.len, 2 + 10);
  t.equal(a.addr.toString('latin1', 2, 12), '\0sd/notify');
  t.throws(() => sockaddrUn('/' + 'x'.repeat(107)), { code: 'ENAMETOOLONG' }, '108 bytes with the NUL do not fit');
  t.equal(sockaddrUn('/' + 'x'.repeat(106)).len, 110, '107 and the NUL fit');
});
