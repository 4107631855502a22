import { redactor } from '@mgx/agent-sdk';
import type { SecretKeeper } from '@mgx/api';

/**
 * Session secrets in this process's memory only: never in the store, events, logs or
 * labels. Lost if the server restarts before a session starts (documented); a running
 * session's runner already holds its copy.
 */
export class MemorySecrets implements SecretKeeper {
  readonly #bySession = new Map<string, Record<string, string>>();

  put(sessionId: string, secrets: Record<string, string>): void {
    this.#bySession.set(sessionId, { ...secrets });
  }

  get(sessionId: string): Record<string, string> {
    return this.#bySession.get(sessionId) ?? {};
  }

  forget(sessionId: string): void {
    this.#bySession.delete(sessionId);
  }

  /**
   * A function that replaces every secret value of the session found in an event's strings
   * (defense in depth: an agent that echoes its key does not leak it into the store).
   */
  redactor(sessionId: string): ((data: Record<string, unknown>) => Record<string, unknown>) | undefined {
    // a value shorter than 4 characters would match too much ordinary text to be redacted
    const r = redactor(Object.values(this.#bySession.get(sessionId) ?? {}).filter((v) => v.length >= 4));
    if (!r.active) return undefined;
    return (data) => r.deep(data);
  }
}
