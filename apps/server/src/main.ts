// `npm start`: the all-in-one server (API and worker), or one role with MGX_ROLE.
import { ConfigError, loadSettings } from '@mgx/config';
import { startServer, StartupError } from './server.js';

async function main(): Promise<void> {
  const settings = loadSettings();
  const server = await startServer(settings);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    server.logger.info({ signal }, 'stopping: no new sessions; running ones are left to the next start');
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        server.logger.error({ err }, 'stopping failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError || err instanceof StartupError) {
    process.stderr.write(`mgx: ${err.message}\n`);
    process.exit(78);
  }
  process.stderr.write(`mgx: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
