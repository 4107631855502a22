import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { type ConfigError, domainMatches, egressAllowed, loadSettings } from '../src/index.js';

const providers = (list: unknown, env: Record<string, string> = {}) =>
  loadSettings({ MGX_MODEL_PROVIDERS: JSON.stringify(list), ...env }, '/srv');

describe('model providers', () => {
  it('reads keys from the named variable or a file, and never shows them serialized or inspected', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgx-providers-'));
    writeFileSync(join(dir, 'key'), 'sk-from-file\n');
    const s = providers(
      [
        { name: 'openai', baseUrl: 'https://api.openai.com/v1/', apiKeyEnv: 'OPENAI_KEY', models: ['gpt-4o-mini'] },
        { name: 'local', baseUrl: 'http://10.0.0.5:8000/v1', apiKeyFile: join(dir, 'key'), models: ['*'], tenants: ['acme'] },
      ],
      { OPENAI_KEY: 'sk-from-env' },
    );
    expect(s.models.providers.map((p) => [p.name, p.baseUrl, p.key.reveal(), p.tenants])).toEqual([
      ['openai', 'https://api.openai.com/v1', 'sk-from-env', undefined],
      ['local', 'http://10.0.0.5:8000/v1', 'sk-from-file', ['acme']],
    ]);
    const shown = JSON.stringify(s) + inspect(s, { depth: 10 }) + String(s.models.providers[0]?.key);
    expect(shown).not.toContain('sk-from');
    expect(shown).toContain('[REDACTED]');
  });

  it('needs no key on an API node, which only checks sessions against the list', () => {
    const s = providers([{ name: 'a', baseUrl: 'https://x/v1', apiKeyEnv: 'UNSET', models: ['*'] }], { MGX_ROLE: 'api' });
    expect(s.models.providers.map((p) => [p.name, p.key.reveal()])).toEqual([['a', '']]);
  });

  it('names what is wrong with each provider', () => {
    const problems = (list: unknown, env?: Record<string, string>) => {
      try {
        providers(list, env);
        return [];
      } catch (err) {
        return (err as ConfigError).problems.map((p) => p.message);
      }
    };
    expect(problems([{ name: 'a', baseUrl: 'ftp://x', apiKeyEnv: 'K', models: ['*'] }], { K: 'k' })).toEqual([
      'provider 0: a: baseUrl must be an http or https URL',
    ]);
    expect(problems([{ name: 'a', baseUrl: 'https://x', apiKeyEnv: 'UNSET', models: ['*'] }])).toEqual([
      'provider 0: a: its key (env UNSET) is empty or unset',
    ]);
    expect(problems([{ name: 'a', baseUrl: 'https://x', apiKeyEnv: 'K', models: [] }], { K: 'k' })).toEqual([
      'provider 0: a: models must be a non-empty list of model names (or ["*"])',
    ]);
    expect(problems({})).toEqual(['must be a JSON list of { name, baseUrl, apiKeyEnv, models }']);
  });
});

describe('egress domains', () => {
  it('matches a host by name or under a wildcard, never the wildcard domain itself or a look-alike', () => {
    expect(domainMatches('registry.npmjs.org', 'Registry.NPMJS.org.')).toBe(true);
    expect(domainMatches('*.github.com', 'api.github.com')).toBe(true);
    expect(domainMatches('*.github.com', 'github.com')).toBe(false);
    expect(domainMatches('*.github.com', 'evilgithub.com')).toBe(false);
    expect(domainMatches('registry.npmjs.org', 'registry.npmjs.org.evil.com')).toBe(false);
  });

  it("grants a session's pattern only when a server pattern for its tenant covers it", () => {
    const { allow } = loadSettings({ MGX_EGRESS_ALLOW: '*.github.com,registry.npmjs.org;acme:api.acme.dev' }, '/srv').egress;
    expect(egressAllowed(allow, 'acme', 'api.acme.dev')).toBe(true);
    expect(egressAllowed(allow, 'globex', 'api.acme.dev')).toBe(false);
    expect(egressAllowed(allow, 'globex', 'api.github.com')).toBe(true);
    expect(egressAllowed(allow, 'globex', '*.github.com')).toBe(true);
    expect(egressAllowed(allow, 'globex', '*.npmjs.org')).toBe(false);
    expect(() => loadSettings({ MGX_EGRESS_ALLOW: 'acme:bad/domain' }, '/srv')).toThrow(/MGX_EGRESS_ALLOW/);
  });
});
