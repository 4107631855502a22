import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SessionEvent } from '@mgx/agent-sdk';
import { SqliteStore } from '@mgx/event-store';
import { IngestHub, toStoredEvent, type IngestSink } from '@mgx/ingest';
import { builtinFrameworks } from '../src/frameworks/index.js';
import { runSession } from '../src/run.js';

export interface RunInput {
  prompt?: string;
  options?: Record<string, unknown>;
  env?: Record<string, string>;
  secrets?: Record<string, string>;
  /** Prepares the workspace (and the directory around it) before the runner starts. */
  setup?: (workspace: string, dir: string) => void;
}

/**
 * One real session on the host: a real IngestHub over a unix socket with a SqliteStore sink,
 * and the runner's runSession in-process, as the container would run it. `cleanup` receives
 * what undoes it (the caller runs it after the test).
 */
export async function runSessionOnHost(
  framework: string,
  input: RunInput,
  defaults: { prompt: string; network: 'none' | 'egress' },
  cleanup: (undo: () => Promise<void>) => void,
): Promise<{ code: number; events: SessionEvent[]; workspace: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), `mgx-runner-${framework}-`));
  const workspace = join(dir, 'ws');
  mkdirSync(workspace);
  input.setup?.(workspace, dir);
  const store = SqliteStore.open({ file: join(dir, 'db.sqlite') });
  const sink: IngestSink = {
    lastRid: (id) => store.lastRid(id),
    append: async (id, events) => {
      await store.append(id, events.map(toStoredEvent));
    },
    finish: async (id, ev) => {
      await store.append(id, [{ type: 'FINISH', data: ev.data, ts: ev.ts, rid: ev.rid }]);
    },
  };
  const hub = new IngestHub({
    baseDir: join(dir, 'run'),
    sink,
    maxEventBytes: 256 * 1024,
    containerUser: `${process.getuid!()}:${process.getgid!()}`,
  });
  const sessionId = `s-${Math.random().toString(36).slice(2, 10)}`;
  const task = {
    sessionId,
    framework,
    prompt: input.prompt ?? defaults.prompt,
    options: input.options ?? {},
    env: input.env ?? {},
    secrets: input.secrets ?? {},
  };
  await store.createSession({
    id: sessionId,
    framework,
    prompt: task.prompt,
    options: task.options,
    env: task.env,
    tenant: 't',
    workspaceId: sessionId,
    limits: { memoryBytes: 1, cpuQuota: 1, timeoutMs: 1 },
    network: defaults.network,
  });
  const { socketPath } = await hub.open(task);
  // runSession installs SIGTERM/SIGINT handlers for the container; remove them after each run
  const before = { SIGTERM: process.listeners('SIGTERM'), SIGINT: process.listeners('SIGINT') };
  cleanup(async () => {
    for (const sig of ['SIGTERM', 'SIGINT'] as const)
      for (const l of process.listeners(sig)) if (!before[sig].includes(l)) process.off(sig, l);
    await hub.closeAll();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const code = await runSession({ socketPath, workspace, registry: builtinFrameworks(), connectTimeoutMs: 5000 });
  const events = await store.read(sessionId, 0, 100_000);
  return { code, events, workspace, dir };
}
