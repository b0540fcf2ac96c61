import t from 'tap';
import { parseSize } from '../../target/size.js';

t.test('sizes take binary suffixes', async (t) => {
  t.equal(parseSize('512'), 512);
  t.equal(parseSize('4K'), 4096);
  t.equal(parseSize('4k'), 4096);
  t.equal(parseSize('256M'), 256 * 2 ** 20);
  t.equal(parseSize('1G'), 2 ** 30);
  t.equal(parseSize('1GiB'), 2 ** 30);
  t.equal(parseSize('1.5G'), 1.5 * 2 ** 30);
  t.equal(parseSize(8192), 8192);
});

t.test('bad sizes are refused with a reason', async (t) => {
  t.throws(() => parseSize('0'), /more than 0/);
  t.throws(() => parseSize('1000'), /not a multiple of 512/);
  t.throws(() => parseSize('12Q'), /is not a size/);
  t.throws(() => parseSize('-4K'), /is not a size/);
  t.throws(() => parseSize(''), /is not a size/);
});
