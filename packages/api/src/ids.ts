import { randomBytes } from 'node:crypto';

/** Session ids: a time-ordered prefix for readable listings, a random suffix for uniqueness. */
export function newSessionId(): string {
  return `s${Date.now().toString(36)}${randomBytes(6).toString('hex')}`;
}
