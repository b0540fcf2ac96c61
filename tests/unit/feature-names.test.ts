import t from 'tap';
import { flagNames } from '../../tools/commands/list.js';

t.test('every feature bit the kernel sets gets a name, known or not', async (t) => {
  // 6.12's driver: bits 0-9, all named.
  t.same(flagNames(0x3ff).length, 10);
  t.equal(flagNames(0x3ff)[9], 'USER_RECOVERY_FAIL_IO');
  // A 7.3 driver sets 0x1fffff: bits past the names this build knows are still counted.
  const later = flagNames(0x1fffff);
  t.equal(later.length, 21);
  t.equal(later[11], 'AUTO_BUF_REG');
  t.equal(later[20], 'bit20');
  // flags is a u64: a bit above 31 is not lost to 32-bit arithmetic.
  t.same(flagNames(2 ** 40 + 1), ['ZERO_COPY', 'bit40']);
  t.same(flagNames(0), []);
});
