/** `ublk features [--json]`: what this kernel's ublk_drv supports (UBLK_U_CMD_GET_FEATURES). */
import { withControl } from '../cli-util.js';
import { flagNames } from './list.js';

export async function features(o: { json?: boolean }): Promise<number> {
  const bits = await withControl((ctrl) => ctrl.getFeatures());
  const names = flagNames(bits);
  if (o.json) process.stdout.write(JSON.stringify({ features: bits, hex: `0x${bits.toString(16)}`, names }) + '\n');
  else process.stdout.write(`ublk_drv features 0x${bits.toString(16)}: ${names.join(' ')}\n`);
  return 0;
}
