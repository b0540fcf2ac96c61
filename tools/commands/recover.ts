/** `ublk recover -n ID`: a new daemon for a --recoverable device whose daemon died. */
import { isDaemon, processAlive, readState } from '../state.js';
import { UblkCommandError } from '../../ublk/control.js';
import { CliError, requireRoot, withControl } from '../cli-util.js';
import { startDaemon } from './add.js';

export async function recover(o: { number: number; foreground?: boolean; json?: boolean }): Promise<number> {
  requireRoot();
  const state = readState(o.number);
  if (state === null) throw new CliError(`device ${o.number} has no ublk-ts state to recover from (/run/ublk-ts/${o.number}.json)`);
  if (!state.recoverable) throw new CliError(`device ${o.number} was not added with --recoverable`);
  if (processAlive(state.pid) && isDaemon(state.pid)) throw new CliError(`device ${o.number} is served by a live daemon (pid ${state.pid})`);
  await withControl(async (ctrl) => {
    try {
      await ctrl.getDevInfo(o.number);
    } catch (e) {
      if (e instanceof UblkCommandError && e.code === 'ENODEV') {
        throw new CliError(`device ${o.number} does not exist (its state file is stale: ublk del -n ${o.number} removes it)`);
      }
      throw e;
    }
  });
  return startDaemon(
    {
      target: state.target,
      targetModule: state.targetModule,
      targetOptions: state.targetOptions,
      devId: state.id,
      queues: state.queues,
      depth: state.depth,
      maxIoSize: state.maxIoSize,
      recoverable: true,
      pollMaxNs: state.pollMaxNs,
      scheduler: state.scheduler,
      recover: true,
      name: state.name,
    },
    'recover',
    o.foreground === true,
    o.json === true,
  );
}
