import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_TENANT, TokenAuth } from '../src/index.js';

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
