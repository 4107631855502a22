import { createHmac, timingSafeEqual } from 'node:crypto';

export type Verdict = 'ok' | 'expired' | 'invalid';

/**
 * Signed, expiring preview links, for iframes and new tabs where no Authorization header can
 * be set. A token binds one session and one port until its expiry: `<expiry base36>.<HMAC>`.
 * Every node of a fleet must hold the same key (MGX_PREVIEW_KEY) to accept another's links.
 */
export class PreviewSigner {
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length < 32) throw new RangeError('a preview signing key needs at least 32 bytes');
    this.#key = key;
  }

  sign(sessionId: string, port: number, expiresAt: number): string {
    const exp = Math.floor(expiresAt / 1000).toString(36);
    return `${exp}.${this.#mac(sessionId, port, exp)}`;
  }

  verify(token: string, sessionId: string, port: number, now = Date.now()): Verdict {
    const m = /^([0-9a-z]{1,10})\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m?.[1] || !m[2]) return 'invalid';
    const given = Buffer.from(m[2]);
    const wanted = Buffer.from(this.#mac(sessionId, port, m[1]));
    if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) return 'invalid';
    return parseInt(m[1], 36) * 1000 <= now ? 'expired' : 'ok';
  }

  /** When a token expires (ms since the epoch; 0 for a malformed one). */
  expiresAt(token: string): number {
    const exp = /^([0-9a-z]{1,10})\./.exec(token)?.[1];
    return exp ? parseInt(exp, 36) * 1000 : 0;
  }

  #mac(sessionId: string, port: number, exp: string): string {
    return createHmac('sha256', this.#key).update(`mgx-preview\n${sessionId}\n${port}\n${exp}`).digest('base64url');
  }
}
