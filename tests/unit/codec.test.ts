// Control struct encoding round-trips, byte for byte where the kernel reads them.
import t from 'tap';
import fc from 'fast-check';
import { decodeDevInfo, decodeParams, encodeDevInfo, encodeParams, type Params } from '../../ublk/codec.js';
import { paramsFor } from '../../ublk/params.js';
import * as U from '../../ublk/uapi.js';

t.test('dev_info fields land at their offsets and read back', async (t) => {
  const dv = new DataView(new ArrayBuffer(64));
  encodeDevInfo(dv, { nrHwQueues: 2, queueDepth: 64, maxIoBufBytes: 524288, devId: 0xffffffff, flags: U.UBLK_F_USER_RECOVERY | U.UBLK_F_CMD_IOCTL_ENCODE });
  t.equal(dv.getUint16(0, true), 2);
  t.equal(dv.getUint16(2, true), 64);
  t.equal(dv.getUint32(8, true), 524288);
  t.equal(dv.getUint32(12, true), 0xffffffff);
  t.equal(dv.getUint32(24, true), 0x48);
  const back = decodeDevInfo(dv);
  t.equal(back.nrHwQueues, 2);
  t.equal(back.devId, 0xffffffff);
  t.equal(back.flags, 0x48);
});

t.test('params round-trip for any valid basic + discard', async (t) => {
  const basic = fc.record({
    attrs: fc.integer({ min: 0, max: 15 }),
    logicalBsShift: fc.integer({ min: 9, max: 12 }),
    physicalBsShift: fc.integer({ min: 9, max: 12 }),
    ioOptShift: fc.integer({ min: 0, max: 20 }),
    ioMinShift: fc.integer({ min: 0, max: 20 }),
    maxSectors: fc.integer({ min: 8, max: 65536 }),
    chunkSectors: fc.constant(0),
    devSectors: fc.integer({ min: 1, max: 2 ** 50 }),
    virtBoundaryMask: fc.constant(0),
  });
  const discard = fc.record({
    discardAlignment: fc.constant(0),
    discardGranularity: fc.integer({ min: 512, max: 1 << 20 }),
    maxDiscardSectors: fc.integer({ min: 0, max: 0xffffffff }),
    maxWriteZeroesSectors: fc.integer({ min: 0, max: 0xffffffff }),
    maxDiscardSegments: fc.constant(1),
  });
  fc.assert(
    fc.property(basic, fc.option(discard, { nil: undefined }), (b, d) => {
      const p: Params = d ? { basic: b, discard: d } : { basic: b };
      const dv = new DataView(new ArrayBuffer(112));
      encodeParams(dv, p);
      t.equal(dv.getUint32(0, true), 112);
      t.equal(dv.getUint32(4, true), d ? 3 : 1);
      t.same(decodeParams(dv), p);
    }),
    { numRuns: 200 },
  );
});

t.test('a target description becomes ublk_params the kernel accepts', async (t) => {
  const p = paramsFor({ size: 1 << 30, volatileCache: true, fua: true, discard: { granularity: 4096, maxDiscardSectors: 1 << 20, maxWriteZeroesSectors: 1 << 20 } }, 512 * 1024);
  t.equal(p.basic!.devSectors, 2097152);
  t.equal(p.basic!.maxSectors, 1024, 'max_sectors <= max_io_buf_bytes >> 9');
  t.equal(p.basic!.logicalBsShift, 9);
  t.equal(p.basic!.physicalBsShift, 12);
  t.equal(p.basic!.attrs, U.UBLK_ATTR_VOLATILE_CACHE | U.UBLK_ATTR_FUA);
  t.equal(p.discard!.maxDiscardSegments, 1, 'ublk_drv only takes single-range discards');
});
