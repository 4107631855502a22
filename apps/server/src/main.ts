// `npm start`: the all-in-one server (API and worker), or one role with MGX_ROLE.
import { ConfigError, loadSettings, type StopMode } from '@mgx/config';
import { startServer, StartupError, type RunningServer } from './server.js';

async function main(): Promise<void> {
  const settings = loadSettings();
  /** Set once started: a drain request heard while starting waits for it. */
  const started: { server?: RunningServer } = {};
  let stopping: StopMode | undefined;
  /**
   * Stops the process: `handover` leaves running sessions to the next start under the same
   * MGX_OWNER; `drain` claims nothing more, waits for them to end, deregisters. Asked to hand
   * over during a drain (a second signal), it stops waiting and hands over at once.
   */
  const stop = (why: string, how: StopMode) => {
    const { server } = started;
    if (!server || stopping === 'handover' || (stopping === 'drain' && how === 'drain')) return;
    const { logger } = server;
    if (stopping === 'drain') {
      stopping = 'handover';
      logger.warn({ why }, 'asked again during the drain: handing over now; running sessions are left to the next start');
      // the drain's close resolves once the hand-over is done, and exits
      void server.close();
      return;
    }
    stopping = how;
    logger.info(
      { why, stop: how },
      how === 'drain'
        ? 'draining: no new sessions; waiting for running ones to end, then deregistering (signal again to hand over now)'
        : 'stopping: no new sessions; running ones are left to the next start',
    );
    server.close({ drain: how === 'drain' }).then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'stopping failed');
        process.exit(1);
      },
    );
  };
  // an operator's drain request drains whatever MGX_STOP says, and the process ends; one heard
  // while the server was still starting is acted on once it has started
  let drainAsked = false;
  const drainRequested = () => {
    drainAsked = true;
    stop('drain requested by an operator', 'drain');
  };
  started.server = await startServer(settings, { onDrainRequested: drainRequested });
  if (drainAsked) drainRequested();
  const onSignal = (signal: string) => stop(signal, stopping === undefined ? settings.server.stop : 'handover');
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError || err instanceof StartupError) {
    process.stderr.write(`mgx: ${err.message}\n`);
    process.exit(78);
  }
  process.stderr.write(`mgx: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
