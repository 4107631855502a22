import { chown, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ID_PATTERN } from '@mgx/config';

/**
 * Workspaces live under <dataDir>/workspaces/<id>. The path is computed here from a
 * validated id, never taken from a client, and owned by the container's user.
 */
export async function prepareWorkspace(dataDir: string, workspaceId: string, containerUser: string): Promise<string> {
  if (!ID_PATTERN.test(workspaceId)) throw new Error(`invalid workspace id ${JSON.stringify(workspaceId)}`);
  const path = join(dataDir, 'workspaces', workspaceId);
  await mkdir(path, { recursive: true, mode: 0o750 });
  const [uid, gid] = containerUser.split(':').map(Number);
  if (process.getuid?.() === 0) await chown(path, uid!, gid!);
  else await import('node:fs/promises').then((fs) => fs.chmod(path, 0o777));
  return path;
}
