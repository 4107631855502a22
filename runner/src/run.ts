import type { Emitter, FinishData, FrameworkRegistry, FrameworkResult } from '@mgx/agent-sdk';
import { IngestClient } from '@mgx/ingest/client';
import { ScriptExit, sigterm } from './frameworks/script.js';

export const RUNNER_VERSION = '0.1.0';

export interface RunnerOptions {
  socketPath: string;
  workspace: string;
  registry: FrameworkRegistry;
  /** How long to wait for the session's socket; a warm-pool container waits indefinitely. */
  connectTimeoutMs?: number;
  /** Where the runner's own diagnostics go (the container's stderr). */
  debug?: (msg: string) => void;
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
  });
  const ac = new AbortController();
  const onTerm = () => {
    if (!sigterm.ignored) ac.abort();
  };
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onTerm);

  // stopped before any session arrived (a warm-pool container being removed): nothing to say
  const aborted = new Promise<null>((resolve) => ac.signal.addEventListener('abort', () => resolve(null), { once: true }));
  const hello = await Promise.race([client.connect(), aborted]);
  if (!hello) {
    client.close();
    return 143;
  }
  const { task } = hello;
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
        emit: emitter,
        signal: ac.signal,
      });
    } catch (err) {
      if (err instanceof ScriptExit) {
        // exit without FINISH, but only after what was emitted before is stored
        await client.flush();
        client.close();
        return err.code;
      }
      result = { status: 'failed', reason: 'agent_error', message: (err as Error).message || String(err) };
    }
  }

  if (ac.signal.aborted) {
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
