import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

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
