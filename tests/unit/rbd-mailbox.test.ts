// The rbd queues' mailbox (target/rbd/mailbox.ts): what one queue posts,
// only its owner reads, in order, across the wrap of its ring.
import t from 'tap';
import { MAILBOX_SLOTS, Mailbox, mailboxBytes } from '../../target/rbd/mailbox.js';

t.test('requests posted to a queue reach that queue alone, in order, round after round', async (t) => {
  const buf = new SharedArrayBuffer(mailboxBytes(3));
  const q = [0, 1, 2].map((i) => new Mailbox(buf, 3, i));
  const got: [number, number][] = [];
  let lost = 0;
  for (let round = 0; round < 3; round++) {
    // More than a ring's worth in all, never more than its slots at once.
    for (let i = 0; i < MAILBOX_SLOTS; i++) q[0].post(2, i % 4096, -i);
    t.notOk(q[0].ready() || q[1].ready(), 'the other queues see nothing');
    for (; q[2].ready(); q[2].next()) got.push([q[2].tag(), q[2].res()]);
    lost += MAILBOX_SLOTS - got.length;
    t.same(got[MAILBOX_SLOTS - 1], [MAILBOX_SLOTS - 1, -(MAILBOX_SLOTS - 1)], `round ${round}: the last one read last`);
    got.length = 0;
  }
  t.equal(lost, 0, 'none lost');
});
