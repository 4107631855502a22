import { chmodSync, chownSync } from 'node:fs';

/** The uid and gid of a `uid:gid` user setting (AGENT_CONTAINER_USER). */
export function parseUser(user: string): { uid: number; gid: number } {
  const m = /^(\d+):(\d+)$/.exec(user);
  if (!m) throw new Error(`user ${JSON.stringify(user)} is not uid:gid`);
  return { uid: Number(m[1]), gid: Number(m[2]) };
}

/**
 * Lets the agent's container user (`uid:gid`) use a host path it needs (a workspace, an ingest
 * socket). A root server chowns the path to that user and then sets `ownedMode`, when given. A
 * rootless server cannot chown to the container's (mapped) user, so it opens the path's mode to
 * `openMode` instead; so does a root server whose chown fails. Synchronous: it runs on every
 * session's start path. Returns which of the two it did.
 */
export function grantToAgentUser(path: string, user: string, modes: { ownedMode?: number; openMode: number }): 'owned' | 'opened' {
  try {
    if (process.getuid?.() !== 0) throw new Error('not root');
    const { uid, gid } = parseUser(user);
    chownSync(path, uid, gid);
    if (modes.ownedMode !== undefined) chmodSync(path, modes.ownedMode);
    return 'owned';
  } catch {
    chmodSync(path, modes.openMode);
    return 'opened';
  }
}
