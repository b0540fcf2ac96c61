// Pins struct sockaddr_un (include/uapi/linux/un.h) and the socket
// constants: a wrong offset or length would send systemd's READY=1 nowhere.
import t from 'tap';
import * as S from '../../sys/socket.js';
import { AF_UNIX, MSG_DONTWAIT, MSG_NOSIGNAL, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, sockaddrUn, struct_sockaddr_un } from '../../sys/socket.js';
import { kernel_timespec } from '../../sys/uring/layout.js';

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

t.test('struct msghdr, iovec, sockaddr_in/in6 and __kernel_timespec (x86_64), and the stream socket constants', async (t) => {
  t.same({ ...S.struct_msghdr }, { SIZE: 56, msg_name: 0, msg_namelen: 8, msg_iov: 16, msg_iovlen: 24, msg_control: 32, msg_controllen: 40, msg_flags: 48 });
  t.same({ ...S.struct_iovec }, { SIZE: 16, iov_base: 0, iov_len: 8 });
  t.same({ ...S.struct_sockaddr_in }, { SIZE: 16, sin_family: 0, sin_port: 2, sin_addr: 4 });
  t.same({ ...S.struct_sockaddr_in6 }, { SIZE: 28, sin6_family: 0, sin6_port: 2, sin6_flowinfo: 4, sin6_addr: 8, sin6_scope_id: 24 });
  t.same({ ...kernel_timespec }, { SIZE: 16, tv_sec: 0, tv_nsec: 8 });
  t.same(
    [S.AF_INET, S.AF_INET6, S.SOCK_STREAM, S.MSG_WAITALL, S.SOL_SOCKET, S.SO_RCVTIMEO, S.SO_SNDTIMEO, S.IPPROTO_TCP, S.TCP_NODELAY, S.SHUT_RDWR, S.UIO_MAXIOV],
    [2, 10, 1, 0x100, 1, 20, 21, 6, 1, 2, 1024],
  );
});

t.test('sockaddr_in and sockaddr_in6: family in host order, port and address in network order', async (t) => {
  const v4 = S.sockaddrOf({ family: 4, address: '127.0.0.1', port: 10809 });
  t.equal(v4.len, 16);
  t.equal(v4.addr.toString('hex'), '0200' + '2a39' + '7f000001' + '0000000000000000');
  const v6 = S.sockaddrOf({ family: 6, address: '::1', port: 10809 });
  t.equal(v6.len, 28);
  t.equal(v6.addr.toString('hex', 0, 8), '0a00' + '2a39' + '00000000');
  t.equal(v6.addr.toString('hex', 8, 24), '00000000000000000000000000000001');
  const mapped = S.sockaddrOf({ family: 6, address: '::ffff:10.1.2.3', port: 1 });
  t.equal(mapped.addr.toString('hex', 8, 24), '00000000000000000000ffff0a010203');
  const full = S.sockaddrOf({ family: 6, address: 'fe80:1:2:3:4:5:6:7', port: 1 });
  t.equal(full.addr.toString('hex', 8, 24), 'fe800001000200030004000500060007');
  t.equal(S.sockaddrOf({ family: 6, address: 'fe80::1', port: 1 }).addr.toString('hex', 8, 24), 'fe800000000000000000000000000001');
});
