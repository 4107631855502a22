import { lstatSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { grantToAgentUser, ID_PATTERN } from '@mgx/config';

export class WorkspaceError extends Error {
  override readonly name = 'WorkspaceError';
  readonly code = 'WORKSPACE_INVALID';
}

/** The host path of a workspace, computed from a validated id, never taken from a client. */
export function workspacePath(dataDir: string, workspaceId: string): string {
  if (!ID_PATTERN.test(workspaceId)) throw new WorkspaceError(`invalid workspace id ${JSON.stringify(workspaceId)}`);
  return join(dataDir, 'workspaces', workspaceId);
}

/**
 * Workspaces live under <dataDir>/workspaces/<id>, owned by the container's user.
 *
 * Symlinks: an agent can create links inside its workspace, but they resolve inside its
 * container. The host never follows them: nothing here reads or writes below the workspace
 * root, and the root itself must be a real directory (a link there is refused, so chown or
 * the bind mount cannot be pointed elsewhere).
 */
export async function prepareWorkspace(dataDir: string, workspaceId: string, containerUser: string): Promise<string> {
  const path = workspacePath(dataDir, workspaceId);
  mkdirSync(join(dataDir, 'workspaces'), { recursive: true, mode: 0o711 });
  await agentOwnedDir(path, containerUser, `workspace ${workspaceId}`);
  return path;
}

/**
 * Creates `path` if needed (its parent must exist) and hands it to the container's user.
 * Synchronous: three metadata calls on every session's start path, where each await on the
 * libuv pool lets unrelated work (other requests) run first.
 */
export async function agentOwnedDir(path: string, containerUser: string, what: string): Promise<void> {
  try {
    mkdirSync(path, { mode: 0o750 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = lstatSync(path);
  if (!st.isDirectory() || st.isSymbolicLink()) throw new WorkspaceError(`${what} is not a plain directory; refusing to use it`);
  // root: owned by the container's user (mode 0750 from mkdir); rootless: open to it
  grantToAgentUser(path, containerUser, { openMode: 0o777 });
}
