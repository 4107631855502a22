import { describe, expect, it } from 'vitest';
import { loadSettings, MIN_MEMORY_BYTES, type Settings } from '@mgx/config';
import { admit, type CreateSessionInput, type FrameworkInfo } from '../src/index.js';

const frameworks: FrameworkInfo[] = [
  { name: 'script', description: '', optionsSchema: {}, requiresEgress: false },
  { name: 'openai', description: '', optionsSchema: {}, requiresEgress: true },
];

/** A server with 512m max memory, 1 CPU, a 120 s maximum timeout and 1 KiB prompts. */
const settings = (env: Record<string, string> = {}): Settings =>
  loadSettings(
    {
      AGENT_CONTAINER_MEMORY_LIMIT: '256m',
      AGENT_CONTAINER_MEMORY_MAX: '512m',
      AGENT_TASK_TIMEOUT_SECONDS: '60',
      AGENT_TASK_TIMEOUT_MAX_SECONDS: '120',
      MGX_MAX_PROMPT_BYTES: '1024',
      ...env,
    },
    '/srv',
  );
const base: CreateSessionInput = { framework: 'script', prompt: 'hello' };
const run = (input: Partial<CreateSessionInput>, opts: { env?: Record<string, string>; secretsAccepted?: boolean; tenant?: string } = {}) =>
  admit({ ...base, ...input }, settings(opts.env), frameworks, {
    secretsAccepted: opts.secretsAccepted ?? true,
    tenant: opts.tenant ?? 'acme',
  });
const problems = (input: Partial<CreateSessionInput>, opts?: Parameters<typeof run>[1]) => {
  const r = run(input, opts);
  return r.ok ? [] : r.problems;
};

describe('admit', () => {
  it("fills every limit from the server's defaults", () => {
    const r = run({});
    expect(r).toEqual({
      ok: true,
      spec: {
        framework: 'script',
        prompt: 'hello',
        workspaceId: undefined,
        options: {},
        env: {},
        secrets: {},
        limits: { memoryBytes: 256 * 1024 ** 2, cpuQuota: 100000, timeoutMs: 60_000 },
        network: 'none',
      },
    });
  });

  it('resolves what the caller asked for within the maxima', () => {
    const r = run({
      workspaceId: 'ws1',
      memory: '512m',
      cpus: 0.5,
      timeoutSeconds: 120,
      idleTimeoutSeconds: 30,
      options: { a: 1 },
      env: { FOO: 'bar' },
      secrets: { API_KEY: 'k' },
    });
    expect(r.ok && r.spec).toEqual({
      framework: 'script',
      prompt: 'hello',
      workspaceId: 'ws1',
      options: { a: 1 },
      env: { FOO: 'bar' },
      secrets: { API_KEY: 'k' },
      limits: { memoryBytes: 512 * 1024 ** 2, cpuQuota: 50000, timeoutMs: 120_000, idleTimeoutMs: 30_000 },
      network: 'none',
    });
    expect(run({ memory: MIN_MEMORY_BYTES }).ok).toBe(true);
    expect(run({ cpus: 0.01 }).ok).toBe(true);
  });

  it.each<[string, Partial<CreateSessionInput>, string, string, RegExp]>([
    ['unknown framework', { framework: 'nope' }, 'framework', 'invalid', /^unknown framework "nope"; available: script, openai$/],
    [
      'prompt too large',
      { prompt: 'x'.repeat(1025) },
      'prompt',
      'too_large',
      /^prompt is 1025 bytes; the limit is 1024 \(MGX_MAX_PROMPT_BYTES\)$/,
    ],
    ['memory not a size', { memory: 'lots' }, 'memory', 'invalid', /^memory "lots" is not a size \(write e.g. 256m or 1g\)$/],
    ['memory below the minimum', { memory: '8m' }, 'memory', 'invalid', /^memory must be at least 16m$/],
    ['memory in bytes below the minimum', { memory: MIN_MEMORY_BYTES - 1 }, 'memory', 'invalid', /^memory must be at least 16m$/],
    ['memory over the maximum', { memory: '1g' }, 'memory', 'invalid', /^memory 1g exceeds the server maximum of 512m$/],
    [
      'timeout over the maximum',
      { timeoutSeconds: 121 },
      'timeoutSeconds',
      'invalid',
      /^timeoutSeconds 121 exceeds the server maximum of 120$/,
    ],
    [
      'idle timeout over the timeout',
      { timeoutSeconds: 10, idleTimeoutSeconds: 11 },
      'idleTimeoutSeconds',
      'invalid',
      /^idleTimeoutSeconds 11 exceeds the session's timeout of 10$/,
    ],
    ['idle timeout over the default timeout', { idleTimeoutSeconds: 61 }, 'idleTimeoutSeconds', 'invalid', /timeout of 60$/],
    ['cpus over the maximum', { cpus: 4 }, 'cpus', 'invalid', /^cpus 4 exceeds the server maximum of 1$/],
    ['cpus below the minimum', { cpus: 0.001 }, 'cpus', 'invalid', /^cpus must be at least 0.01$/],
    ['a refused env name', { env: { LD_PRELOAD: 'x' } }, 'env', 'invalid', /^env name LD_PRELOAD is not allowed/],
    ['a refused secret value', { secrets: { OK: 'a\nb' } }, 'secrets', 'invalid', /^secret OK contains a NUL or newline$/],
    ['a framework that needs egress', { framework: 'openai' }, 'network', 'invalid', /^framework "openai" needs network egress/],
    [
      'egress not allowed',
      { network: 'egress' },
      'network',
      'forbidden',
      /^network egress is not allowed on this server \(MGX_ALLOW_EGRESS\)$/,
    ],
  ])('refuses %s', (_name, input, field, code, message) => {
    const [first, ...rest] = problems(input);
    expect(rest).toEqual([]);
    expect(first).toMatchObject({ field, code });
    expect(first?.message).toMatch(message);
  });

  it('refuses secrets where no process can keep them', () => {
    expect(problems({ secrets: { API_KEY: 'k' } }, { secretsAccepted: false })).toEqual([
      {
        field: 'secrets',
        code: 'invalid',
        message: 'this server only accepts sessions; secrets need the process that runs them (MGX_ROLE=all)',
      },
    ]);
    expect(run({ secrets: {} }, { secretsAccepted: false }).ok).toBe(true);
  });

  it('admits egress where the server allows it and the framework needs it', () => {
    const r = run({ framework: 'openai', network: 'egress' }, { env: { MGX_ALLOW_EGRESS: 'true' } });
    expect(r.ok && r.spec.network).toBe('egress');
  });

  it('lists every problem, in the order the rules are checked', () => {
    expect(problems({ framework: 'nope', memory: '1g', cpus: 4, network: 'egress' }).map((p) => p.field)).toEqual([
      'framework',
      'memory',
      'cpus',
      'network',
    ]);
  });

  const PROVIDERS = {
    MGX_MODEL_PROVIDERS: JSON.stringify([
      { name: 'main', baseUrl: 'https://models.example/v1', apiKeyEnv: 'MAIN_KEY', models: ['*'] },
      { name: 'acmeonly', baseUrl: 'https://acme.example/v1', apiKeyEnv: 'MAIN_KEY', models: ['m1'], tenants: ['acme'] },
    ]),
    MAIN_KEY: 'sk-main',
  };

  it('admits a model-calling framework without egress when it names a provider of the server for its tenant', () => {
    const ok = run({ framework: 'openai', options: { provider: 'acmeonly', model: 'm1' } }, { env: PROVIDERS });
    expect(ok.ok && ok.spec.network).toBe('none');
    expect(problems({ framework: 'openai', options: { provider: 'acmeonly', model: 'm1' } }, { env: PROVIDERS, tenant: 'globex' })).toEqual(
      [expect.objectContaining({ field: 'options', code: 'forbidden', message: expect.stringContaining('yours: main') as string })],
    );
    expect(problems({ framework: 'openai', options: { provider: 'main' } })).toEqual([
      expect.objectContaining({ field: 'options', message: expect.stringContaining('it has none (MGX_MODEL_PROVIDERS)') as string }),
    ]);
  });

  it("sets token and call budgets from the session's ask, the server's defaults and the tenant's maximum", () => {
    const env = {
      MGX_MODEL_TOKENS_DEFAULT: '1000',
      MGX_MODEL_CALLS_MAX: '10',
      MGX_TENANT_MODEL_LIMITS: 'globex:tokens=500,calls=0',
    };
    const limits = (input: Partial<CreateSessionInput>, tenant = 'acme') => {
      const r = run(input, { env, tenant });
      return r.ok ? { tokens: r.spec.limits.maxModelTokens, calls: r.spec.limits.maxModelCalls } : r.problems.map((p) => p.message);
    };
    expect(limits({})).toEqual({ tokens: 1000, calls: 10 });
    expect(limits({ maxModelTokens: 5, maxModelCalls: 3 })).toEqual({ tokens: 5, calls: 3 });
    expect(limits({ maxModelCalls: 11 })).toEqual(['maxModelCalls 11 exceeds your maximum of 10']);
    expect(limits({}, 'globex')).toEqual({ tokens: 500, calls: undefined });
    expect(limits({ maxModelTokens: 501 }, 'globex')).toEqual(['maxModelTokens 501 exceeds your maximum of 500']);
  });

  it('admits an egress allow-list within the domains the server grants the tenant, with no network', () => {
    const env = { MGX_EGRESS_ALLOW: 'registry.npmjs.org,*.github.com;acme:api.acme.dev' };
    const r = run({ network: { allow: ['Registry.NPMjs.org', 'api.github.com', '*.github.com', 'api.acme.dev'] } }, { env });
    expect(r.ok && r.spec.network).toBe('none');
    expect(r.ok && r.spec.limits.egressAllow).toEqual(['registry.npmjs.org', 'api.github.com', '*.github.com', 'api.acme.dev']);
    expect(problems({ network: { allow: ['api.acme.dev'] } }, { env, tenant: 'globex' })).toEqual([
      expect.objectContaining({ field: 'network', code: 'forbidden' }),
    ]);
    expect(problems({ network: { allow: ['github.com'] } }, { env }).map((p) => p.code)).toEqual(['forbidden']);
    expect(problems({ network: { allow: ['evil.com/x'] } }, { env }).map((p) => p.code)).toEqual(['invalid']);
  });
});
