// Issue 3: first contact with ublk_drv through our own SQE128 io_uring.
import t from 'tap';
import { ublk } from '../lib/ublk.js';

t.test('ublk features names what the 6.12 driver supports', async (t) => {
  const r = ublk('features');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^ublk_drv features 0x[0-9a-f]+: /);
  for (const name of ['USER_RECOVERY', 'USER_RECOVERY_REISSUE', 'CMD_IOCTL_ENCODE', 'USER_COPY']) t.match(r.stdout, name);
});

t.test('ublk features --json gives the bits and their names', async (t) => {
  const r = ublk('features', '--json');
  t.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { features: number; names: string[] };
  t.ok(j.features & (1 << 6), 'CMD_IOCTL_ENCODE is supported');
  t.ok(j.names.includes('USER_RECOVERY'));
  t.equal(j.names.length, j.features.toString(2).replace(/0/g, '').length, 'one name per bit');
});
