import { lstatSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { grantToAgentUser, ID_PATTERN } from '@mgx/config';

export class WorkspaceError extends Error {
  override readonly name = 'WorkspaceError';
  readonly code = 'WORKSPACE_INVALID';
}

/**
 * The host path of a workspace under the workspace root (MGX_WORKSPACE_ROOT, by default
 * <MGX_DATA_DIR>/workspaces), computed from a validated id, never taken from a client.
 */
export function workspacePath(root: string, workspaceId: string): string {
  if (!ID_PATTERN.test(workspaceId)) throw new WorkspaceError(`invalid workspace id ${JSON.stringify(workspaceId)}`);
  return join(root, workspaceId);
}

/**
 * Workspaces live under <root>/<id> (root: MGX_WORKSPACE_ROOT), owned by the container's user.
 *
 * Symlinks: an agent can create links inside its workspace, but they resolve inside its
 * container. The host never follows them: nothing here reads or writes below the workspace
 * root, and the root itself must be a real directory (a link there is refused, so chown or
 * the bind mount cannot be pointed elsewhere).
 */
export async function prepareWorkspace(root: string, workspaceId: string, containerUser: string): Promise<string> {
  const path = workspacePath(root, workspaceId);
  mkdirSync(root, { recursive: true, mode: 0o711 });
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
