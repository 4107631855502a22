import { dirname, join } from 'node:path';
import {
  ExitWithoutFinish,
  type Emitter,
  type FinishData,
  type FrameworkRegistry,
  type FrameworkResult,
  type GatewayEndpoints,
} from '@mgx/agent-sdk';
import { answerDial, forwardLoopback, IngestClient, SERVICE_SOCKETS, type LoopbackForward, type ServiceName } from '@mgx/ingest/client';
// bundled into the runner by esbuild, so the image reports the version it was built from
import rootPackage from '../../package.json' with { type: 'json' };

/** The version of mgx the runner belongs to (the root package.json's). */
export const RUNNER_VERSION: string = rootPackage.version;

export interface RunnerOptions {
  socketPath: string;
  workspace: string;
  registry: FrameworkRegistry;
  /** How long to wait for the session's socket; a warm-pool container waits indefinitely. */
  connectTimeoutMs?: number;
  /** Where the runner's own diagnostics go (the container's stderr). */
  debug?: (msg: string) => void;
  /** Aborted when the platform stops the session (the process got SIGTERM or SIGINT). */
  signal?: AbortSignal;
}

/**
 * One session, start to finish: connect to the session's ingest socket, receive the task,
 * emit START, run the framework, emit FINISH, and wait until every event is acknowledged.
 * Returns the process exit code.
 */
export async function runSession(o: RunnerOptions): Promise<number> {
  const client = new IngestClient({
    socketPath: o.socketPath,
    connectTimeoutMs: o.connectTimeoutMs ?? 60_000,
    ...(o.debug ? { onDebug: o.debug } : {}),
    onDial: (msg) => answerDial(dirname(o.socketPath), msg),
  });
  // follows the caller's signal, except while the framework asked to ignore a stop
  const ac = new AbortController();
  let ignoringStop = false;
  const onStop = () => {
    if (!ignoringStop) ac.abort();
  };
  if (o.signal?.aborted) ac.abort();
  o.signal?.addEventListener('abort', onStop, { once: true });
  try {
    return await session(o, client, ac.signal, (ignore) => {
      ignoringStop = ignore;
    });
  } finally {
    o.signal?.removeEventListener('abort', onStop);
  }
}

type HelloTask = Awaited<ReturnType<IngestClient['connect']>>['task'];

/** The session itself; `signal` is aborted when the platform stops it. */
async function session(
  o: RunnerOptions,
  client: IngestClient,
  signal: AbortSignal,
  ignoreStop: (ignore: boolean) => void,
): Promise<number> {
  // stopped before any session arrived (a warm-pool container being removed): nothing to say
  const aborted = new Promise<null>((resolve) => {
    if (signal.aborted) resolve(null);
    else signal.addEventListener('abort', () => resolve(null), { once: true });
  });
  const hello = await Promise.race([client.connect(), aborted]);
  if (!hello) {
    client.close();
    return 143;
  }
  const { task } = hello;
  const forwards: LoopbackForward[] = [];
  const gateway = await gatewayEndpoints(dirname(o.socketPath), hello.services ?? [], forwards, o.debug);
  try {
    return await run(o, client, signal, ignoreStop, task, gateway);
  } finally {
    for (const f of forwards) f.close();
  }
}

/**
 * The services the server offers besides ingest, on loopback ports inside the container
 * for programs that speak TCP only. A service that cannot be exposed is left out.
 */
async function gatewayEndpoints(
  dir: string,
  services: ServiceName[],
  forwards: LoopbackForward[],
  debug: ((msg: string) => void) | undefined,
): Promise<GatewayEndpoints | undefined> {
  const gateway: GatewayEndpoints = {};
  const expose = async (name: ServiceName) => {
    if (!services.includes(name)) return undefined;
    try {
      const f = await forwardLoopback(join(dir, SERVICE_SOCKETS[name]));
      forwards.push(f);
      return f.port;
    } catch (err) {
      debug?.(`cannot expose ${name} on loopback: ${(err as Error).message}`);
      return undefined;
    }
  };
  const model = await expose('model');
  if (model !== undefined) gateway.openaiBaseUrl = `http://127.0.0.1:${model}/v1`;
  const proxy = await expose('proxy');
  if (proxy !== undefined) gateway.httpProxy = `http://127.0.0.1:${proxy}`;
  return Object.keys(gateway).length > 0 ? gateway : undefined;
}

async function run(
  o: RunnerOptions,
  client: IngestClient,
  signal: AbortSignal,
  ignoreStop: (ignore: boolean) => void,
  task: HelloTask,
  gateway: GatewayEndpoints | undefined,
): Promise<number> {
  const emitter: Emitter = {
    emit: (type, data) => void client.emit(type, data),
    messageDelta: (messageId, delta) => void client.emit('MESSAGE', { messageId, role: 'assistant', delta }),
    messageDone: (messageId, text) => void client.emit('MESSAGE', { messageId, role: 'assistant', text, done: true }),
    log: (text, stream = 'agent', level = 'info') => void client.emit('LOG', { stream, text, level }),
    drain: () => client.drain(),
  };

  // uptimeMs: how long the runner's process had been up, so a slow start can be told apart (engine or runner)
  client.emit('START', {
    framework: task.framework,
    runnerVersion: RUNNER_VERSION,
    node: process.version,
    pid: process.pid,
    uptimeMs: Math.round(process.uptime() * 1000),
  });
  const framework = o.registry.get(task.framework);
  let result: FrameworkResult;
  if (!framework) {
    result = {
      status: 'failed',
      reason: 'agent_error',
      message: `this image has no framework "${task.framework}"; it has ${o.registry
        .list()
        .map((f) => f.name)
        .join(', ')}`,
    };
  } else {
    try {
      result = await framework.run({
        sessionId: task.sessionId,
        prompt: task.prompt,
        workspace: o.workspace,
        options: task.options,
        env: task.env ?? {},
        secrets: task.secrets,
        ...(gateway ? { gateway } : {}),
        emit: emitter,
        signal: signal,
        ignoreStop,
      });
    } catch (err) {
      if (err instanceof ExitWithoutFinish) {
        // exit without FINISH, but only after what was emitted before is stored
        await client.flush();
        client.close();
        return err.code;
      }
      result = { status: 'failed', reason: 'agent_error', message: (err as Error).message || String(err) };
    }
  }

  if (signal.aborted) {
    // stopped by the platform (deadline or cancel): it has decided the outcome already
    await Promise.race([client.flush(), new Promise((r) => setTimeout(r, 2000))]);
    client.close();
    return 143;
  }
  const finish: FinishData =
    result.status === 'succeeded'
      ? { status: 'succeeded', reason: 'finished', ...(result.message ? { message: result.message } : {}) }
      : { status: 'failed', reason: 'agent_error', message: result.message };
  client.emit('FINISH', { ...finish });
  await client.flush();
  client.close();
  return result.status === 'succeeded' ? 0 : 1;
}
