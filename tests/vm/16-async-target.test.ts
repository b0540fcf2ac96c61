// A target that completes through promises runs its queues on the event loop.
import t from 'tap';
import { createDevice } from '../../index.js';
import { fio, snapshot } from '../lib/ublk.js';

t.test('an async target passes fio verify on 2 queues', async (t) => {
  const before = snapshot();
  const dev = await createDevice({ target: new URL('../fixtures/async-mem.js', import.meta.url), targetOptions: { size: '64M' }, queues: 2, depth: 32 });
  t.teardown(() => dev.stop());
  const r = fio(['--name=v', `--filename=${dev.info.path}`, '--rw=randwrite', '--bs=4k-64k', '--iodepth=32', '--ioengine=libaio', '--direct=1', '--size=48M', '--verify=crc32c', '--verify_fatal=1', '--numjobs=1']);
  t.same(r.errors, [0], 'verify passes');
  t.ok(dev.stats().total.writes > 100, 'the writes went through the async queue');
  await dev.stop();
  t.same(snapshot(), before, 'no device, state file or process left behind');
});
