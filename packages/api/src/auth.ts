import { readFileSync } from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import { ID_PATTERN } from '@mgx/config';

export const DEFAULT_TENANT = 'default';

/** Who a caller is: the tenant its sessions belong to, and whether it is an operator. */
export interface Caller {
  tenant: string;
  /** Operators see every tenant's sessions and the fleet. */
  operator: boolean;
}

/** The tokens the settings name are malformed or unreadable (the server refuses to start). */
export class AuthConfigError extends Error {
  override readonly name = 'AuthConfigError';
  readonly code = 'AUTH_TOKENS_INVALID';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export interface TokenSettings {
  apiTokens: string | undefined;
  apiTokensFile: string | undefined;
  operatorTokens?: string | undefined;
  operatorTokensFile?: string | undefined;
}

interface Entry {
  token: Buffer;
  caller: Caller;
}

/** The "tenant:token" specs of one setting and its file, with the name of their source. */
function readSpecs(inline: string | undefined, file: string | undefined, name: string): Array<[string, string]> {
  const specs: Array<[string, string]> = [];
  if (inline) for (const part of inline.split(',')) specs.push([part.trim(), name]);
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (cause) {
      throw new AuthConfigError(`${name}_FILE: cannot read ${file}: ${(cause as Error).message}`, { cause });
    }
    for (const line of text.split('\n')) {
      const t = line.trim();
      if (t && !t.startsWith('#')) specs.push([t, `${name}_FILE`]);
    }
  }
  return specs;
}

/**
 * Bearer tokens → callers. API tokens (MGX_API_TOKENS) name a tenant; operator tokens
 * (MGX_OPERATOR_TOKENS) name the tenant of the sessions their holder creates, and see every
 * tenant's sessions and the fleet. No token at all means single-tenant mode (allowed on
 * loopback only): the one caller is the default tenant, and the operator of its own server.
 */
export class TokenAuth {
  readonly #tokens: Entry[];

  private constructor(entries: Entry[]) {
    this.#tokens = entries;
  }

  get enabled(): boolean {
    return this.#tokens.length > 0;
  }

  /** The tenants the tokens name: a bounded set, fixed at start (metrics label usage by it). */
  get tenants(): string[] {
    return [...new Set(this.#tokens.map((t) => t.caller.tenant))].sort();
  }

  /**
   * Reads MGX_API_TOKENS and MGX_OPERATOR_TOKENS ("tenant:token,…") and the lines of their
   * _FILE settings. Throws AuthConfigError on a malformed entry, an unreadable file, or a token
   * given twice.
   */
  static fromSettings(s: TokenSettings): TokenAuth {
    const specs = [
      ...readSpecs(s.apiTokens, s.apiTokensFile, 'MGX_API_TOKENS').map(([spec, source]) => ({ spec, source, operator: false })),
      ...readSpecs(s.operatorTokens, s.operatorTokensFile, 'MGX_OPERATOR_TOKENS').map(([spec, source]) => ({
        spec,
        source,
        operator: true,
      })),
    ];
    const seen = new Set<string>();
    const entries = specs.map(({ spec, source, operator }) => {
      const i = spec.indexOf(':');
      const tenant = spec.slice(0, i);
      const token = spec.slice(i + 1);
      if (i <= 0 || !ID_PATTERN.test(tenant) || token.length < 16) {
        throw new AuthConfigError(`${source}: each entry must be tenant:token with a tenant id and a token of at least 16 characters`);
      }
      // one token, one caller: an operator token that is also a tenant's would be ambiguous
      if (seen.has(token)) throw new AuthConfigError(`${source}: a token is given twice (each token must name one caller)`);
      seen.add(token);
      return { token: Buffer.from(token), caller: { tenant, operator } };
    });
    return new TokenAuth(entries);
  }

  /** The caller of an Authorization header, or null when it is missing or wrong. */
  callerOf(authorization: string | undefined): Caller | null {
    if (!this.enabled) return { tenant: DEFAULT_TENANT, operator: true };
    const bearer = /^Bearer\s+(?<token>\S+)$/i.exec(authorization ?? '')?.groups?.token;
    if (bearer === undefined) return null;
    const given = Buffer.from(bearer);
    let found: Caller | null = null;
    // every entry is compared, so the time taken does not tell which one matched
    for (const { token, caller } of this.#tokens) {
      if (token.length === given.length && timingSafeEqual(token, given)) found = caller;
    }
    return found;
  }

  /** The tenant of an Authorization header, or null when it is missing or wrong. */
  tenantOf(authorization: string | undefined): string | null {
    return this.callerOf(authorization)?.tenant ?? null;
  }
}
