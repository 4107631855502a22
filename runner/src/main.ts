// Entry point of the agent container. Everything it needs arrives over the session's
// ingest socket; env only says where that socket and the workspace are.
import { frameworkCatalog } from './catalog.js';
import { builtinFrameworks } from './frameworks/index.js';
import { runSession } from './run.js';

const debug = (msg: string) => process.stderr.write(`[mgx-runner] ${msg}\n`);

function session(): void {
  // the platform stops a session with SIGTERM (deadline or cancel); tini forwards it here
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  runSession({
    socketPath: process.env.MGX_INGEST_SOCKET ?? '/run/mgx/ingest.sock',
    workspace: process.env.MGX_WORKSPACE ?? '/workspace',
    registry: builtinFrameworks(),
    // a warm-pool container is started before its session exists and waits for it
    connectTimeoutMs: process.env.MGX_POOLED === '1' ? Number.POSITIVE_INFINITY : 60_000,
    debug,
    signal: stop.signal,
  }).then(
    (code) => process.exit(code),
    (err: unknown) => {
      debug(`fatal: ${(err as Error).stack ?? String(err)}`);
      process.exit(70);
    },
  );
}

// `--catalog` prints the bundled frameworks as JSON: the image build records it as a label
if (process.argv[2] === '--catalog') process.stdout.write(`${JSON.stringify(frameworkCatalog())}\n`);
else session();
