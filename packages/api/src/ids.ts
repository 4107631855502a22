import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ID_PATTERN } from '@mgx/config';

/** An id in an API input (a session's, a workspace's, a tenant's, a worker's), named in its error. */
const idOf = (name: string) => z.string().regex(ID_PATTERN, `${name} must be 1-64 letters, digits, _ or -`);
export const sessionId = idOf('sessionId');
export const workspaceId = idOf('workspaceId');
export const tenantId = idOf('tenant');
export const workerId = idOf('workerId');

/** Session ids: a time-ordered prefix for readable listings, a random suffix for uniqueness. */
export function newSessionId(): string {
  return `s${Date.now().toString(36)}${randomBytes(6).toString('hex')}`;
}
