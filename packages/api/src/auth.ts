import { readFileSync } from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import { ID_PATTERN } from '@mgx/config';

export const DEFAULT_TENANT = 'default';

/** Bearer tokens → tenants. Empty means single-tenant mode (allowed on loopback only). */
export class TokenAuth {
  readonly #tokens: Array<{ token: Buffer; tenant: string }>;

  private constructor(entries: Array<{ token: string; tenant: string }>) {
    this.#tokens = entries.map((e) => ({ token: Buffer.from(e.token), tenant: e.tenant }));
  }

  get enabled(): boolean {
    return this.#tokens.length > 0;
  }

  /** Reads MGX_API_TOKENS ("tenant:token,…") and the lines of MGX_API_TOKENS_FILE. */
  static fromSettings(s: { apiTokens: string | undefined; apiTokensFile: string | undefined }): TokenAuth {
    const specs: Array<[string, string]> = [];
    if (s.apiTokens) for (const part of s.apiTokens.split(',')) specs.push([part.trim(), 'MGX_API_TOKENS']);
    if (s.apiTokensFile) {
      for (const line of readFileSync(s.apiTokensFile, 'utf8').split('\n')) {
        const t = line.trim();
        if (t && !t.startsWith('#')) specs.push([t, 'MGX_API_TOKENS_FILE']);
      }
    }
    const entries = specs.map(([spec, source]) => {
      const i = spec.indexOf(':');
      const tenant = spec.slice(0, i);
      const token = spec.slice(i + 1);
      if (i <= 0 || !ID_PATTERN.test(tenant) || token.length < 16) {
        throw new Error(`${source}: each entry must be tenant:token with a tenant id and a token of at least 16 characters`);
      }
      return { tenant, token };
    });
    return new TokenAuth(entries);
  }

  /** The tenant of an Authorization header, or null when it is missing or wrong. */
  tenantOf(authorization: string | undefined): string | null {
    if (!this.enabled) return DEFAULT_TENANT;
    const bearer = /^Bearer\s+(?<token>\S+)$/i.exec(authorization ?? '')?.groups?.token;
    if (bearer === undefined) return null;
    const given = Buffer.from(bearer);
    for (const { token, tenant } of this.#tokens) {
      if (token.length === given.length && timingSafeEqual(token, given)) return tenant;
    }
    return null;
  }
}
