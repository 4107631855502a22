import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MgxClient } from '@mgx/client';
import { sleep } from '../support/sessions.js';

/**
 * The go signal of bench sessions: their script waits at `{ wait_for: GO }` until this file is
 * in their workspace, so that many sessions start their work at one moment, once every
 * container runs (and every subscriber is connected), however long the starts took.
 */
export const GO = '.bench-go';

/** Writes the go file into each session's workspace (a server's default workspace root, under `dataDir`). */
export function go(dataDir: string, sessionIds: readonly string[]): void {
  for (const id of sessionIds) writeFileSync(join(dataDir, 'workspaces', id, GO), '');
}

/**
 * Resolves once no session of the server is queued or starting, and a second more: the engine's
 * own work after many starts settles first, so the window that follows measures the section alone.
 */
export async function allRunning(client: MgxClient): Promise<void> {
  for (;;) {
    const starting = await client.sessions.list.query({ status: ['queued', 'starting'], limit: 1 });
    if (starting.items.length === 0) break;
    await sleep(100);
  }
  await sleep(1000);
}
