import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuthConfigError, DEFAULT_TENANT, TokenAuth } from '../src/index.js';

const TOKEN_A = 'a-token-of-sixteen-chars';
const TOKEN_B = 'b-token-of-sixteen-chars';

const tokensFile = (text: string): string => {
  const file = join(mkdtempSync(join(tmpdir(), 'mgx-auth-')), 'tokens');
  writeFileSync(file, text);
  return file;
};

describe('TokenAuth', () => {
  it('without tokens, every caller is the default tenant', () => {
    const auth = TokenAuth.fromSettings({ apiTokens: undefined, apiTokensFile: undefined });
    expect(auth.enabled).toBe(false);
    expect(auth.tenantOf(undefined)).toBe(DEFAULT_TENANT);
    expect(auth.tenantOf('Bearer whatever')).toBe(DEFAULT_TENANT);
  });

  it('maps bearer tokens from MGX_API_TOKENS and the tokens file to tenants', () => {
    const file = tokensFile(`# tenants\n\n  beta:${TOKEN_B}  \n`);
    const auth = TokenAuth.fromSettings({ apiTokens: ` alpha:${TOKEN_A} `, apiTokensFile: file });
    expect(auth.enabled).toBe(true);
    expect(auth.tenantOf(`Bearer ${TOKEN_A}`)).toBe('alpha');
    expect(auth.tenantOf(`bearer   ${TOKEN_B}`)).toBe('beta');
  });

  it('refuses a missing, malformed or unknown token', () => {
    const auth = TokenAuth.fromSettings({ apiTokens: `alpha:${TOKEN_A}`, apiTokensFile: undefined });
    expect(auth.tenantOf(undefined)).toBeNull();
    expect(auth.tenantOf('')).toBeNull();
    expect(auth.tenantOf(TOKEN_A)).toBeNull();
    expect(auth.tenantOf(`Basic ${TOKEN_A}`)).toBeNull();
    expect(auth.tenantOf(`Bearer ${TOKEN_A} extra`)).toBeNull();
    expect(auth.tenantOf(`Bearer ${TOKEN_A.slice(0, -1)}`)).toBeNull();
    expect(auth.tenantOf(`Bearer ${TOKEN_A}x`)).toBeNull();
    expect(auth.tenantOf(`Bearer ${TOKEN_B}`)).toBeNull();
  });

  it('keeps a colon inside the token', () => {
    const auth = TokenAuth.fromSettings({ apiTokens: `alpha:${TOKEN_A}:more`, apiTokensFile: undefined });
    expect(auth.tenantOf(`Bearer ${TOKEN_A}:more`)).toBe('alpha');
  });

  it.each([
    ['no tenant', `:${TOKEN_A}`],
    ['no colon', TOKEN_A],
    ['a short token', 'alpha:short'],
    ['a tenant that is not an id', `al/pha:${TOKEN_A}`],
  ])('refuses an entry with %s, naming its source', (_name, entry) => {
    expect(() => TokenAuth.fromSettings({ apiTokens: entry, apiTokensFile: undefined })).toThrow(
      /^MGX_API_TOKENS: each entry must be tenant:token/,
    );
    expect(() => TokenAuth.fromSettings({ apiTokens: undefined, apiTokensFile: tokensFile(`${entry}\n`) })).toThrow(
      /^MGX_API_TOKENS_FILE: each entry/,
    );
  });

  it('fails on a tokens file it cannot read', () => {
    expect(() => TokenAuth.fromSettings({ apiTokens: undefined, apiTokensFile: join(tmpdir(), 'mgx-no-such-tokens-file') })).toThrow(
      /ENOENT/,
    );
  });
});

describe('TokenAuth with operator tokens', () => {
  const OPS = 'ops-token-of-sixteen-chars';

  it('resolves API tokens to tenants and operator tokens to operators of their own tenant', () => {
    const file = tokensFile(`# operators\nroot:${OPS}-file\n`);
    const auth = TokenAuth.fromSettings({
      apiTokens: `alpha:${TOKEN_A}`,
      apiTokensFile: undefined,
      operatorTokens: `ops:${OPS}`,
      operatorTokensFile: file,
    });
    expect(auth.enabled).toBe(true);
    expect(auth.callerOf(`Bearer ${TOKEN_A}`)).toEqual({ tenant: 'alpha', operator: false });
    expect(auth.callerOf(`Bearer ${OPS}`)).toEqual({ tenant: 'ops', operator: true });
    expect(auth.callerOf(`Bearer ${OPS}-file`)).toEqual({ tenant: 'root', operator: true });
    expect(auth.tenantOf(`Bearer ${OPS}`)).toBe('ops');
    expect(auth.callerOf(`Bearer ${TOKEN_B}`)).toBeNull();
    expect(auth.callerOf(undefined)).toBeNull();
  });

  it('turns tokens on with operator tokens alone', () => {
    const auth = TokenAuth.fromSettings({ apiTokens: undefined, apiTokensFile: undefined, operatorTokens: `ops:${OPS}` });
    expect(auth.enabled).toBe(true);
    expect(auth.callerOf('Bearer nobody-has-this-token')).toBeNull();
  });

  it('without any token, the one caller is the default tenant and the operator of its own server', () => {
    const auth = TokenAuth.fromSettings({ apiTokens: undefined, apiTokensFile: undefined });
    expect(auth.callerOf(undefined)).toEqual({ tenant: DEFAULT_TENANT, operator: true });
  });

  it.each([
    ['a short token', { operatorTokens: 'ops:short' }, /^MGX_OPERATOR_TOKENS: each entry must be tenant:token/],
    ['no tenant', { operatorTokensFile: tokensFile(`:${OPS}\n`) }, /^MGX_OPERATOR_TOKENS_FILE: each entry/],
    ['a token that is also a tenant token', { apiTokens: `alpha:${OPS}`, operatorTokens: `ops:${OPS}` }, /given twice/],
    [
      'an unreadable file',
      { operatorTokensFile: join(tmpdir(), 'mgx-no-such-operator-file') },
      /^MGX_OPERATOR_TOKENS_FILE: cannot read .*ENOENT/,
    ],
  ])('refuses %s with an AuthConfigError (AUTH_TOKENS_INVALID)', (_name, given, message) => {
    let err: unknown;
    try {
      TokenAuth.fromSettings({ apiTokens: undefined, apiTokensFile: undefined, ...given });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AuthConfigError);
    expect(err).toMatchObject({ name: 'AuthConfigError', code: 'AUTH_TOKENS_INVALID' });
    expect((err as Error).message).toMatch(message);
  });

  it('throws AuthConfigError for a malformed API token too', () => {
    expect(() => TokenAuth.fromSettings({ apiTokens: 'alpha:short', apiTokensFile: undefined })).toThrow(AuthConfigError);
  });
});
