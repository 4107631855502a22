import { readFileSync } from 'node:fs';
import type { SettingProblem } from './errors.js';
import { ID_PATTERN } from './ids.js';

/**
 * A secret the server holds (a provider's API key): `reveal()` gives the value to the one
 * place that sends it; serialized or inspected (logs, API answers, errors) it is redacted.
 */
export class SecretValue {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toJSON(): string {
    return '[REDACTED]';
  }
  toString(): string {
    return '[REDACTED]';
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return '[REDACTED]';
  }
}

/** An OpenAI-compatible chat-completions provider the worker calls with its key. */
export interface ModelProvider {
  name: string;
  /** e.g. https://api.openai.com/v1; the gateway POSTs {baseUrl}/chat/completions. */
  baseUrl: string;
  /** Model names it serves; `*` for any. */
  models: string[];
  /** Tenants that may use it; absent: every tenant. */
  tenants?: string[];
  /** Where the key was read from (apiKeyEnv or apiKeyFile), for messages. */
  keySource: string;
  key: SecretValue;
}

/** Token and call budgets of a session: a default and the most a session may ask for (0: none). */
export interface ModelBudgets {
  defaultTokens: number;
  defaultCalls: number;
  maxTokens: number;
  maxCalls: number;
  /** Maxima for named tenants, instead of maxTokens and maxCalls. */
  tenants: Record<string, { tokens: number; calls: number }>;
}

/** Domains a session may ask to reach through the egress proxy, for every tenant (`*`) or one. */
export type EgressAllow = Record<string, string[]>;

const PROVIDER_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;
const ENV_NAME = /^[A-Z_][A-Z0-9_]{0,127}$/;
/** A domain pattern: a host name, or `*.` and a domain; an IP address counts as a host name. */
export const DOMAIN_PATTERN = /^(\*\.)?[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)*$/;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * MGX_MODEL_PROVIDERS (JSON) or MGX_MODEL_PROVIDERS_FILE (a file of the same JSON): a list of
 * `{ name, baseUrl, apiKeyEnv | apiKeyFile, models, tenants? }`. Keys are read here, once.
 */
export function parseProviders(env: Record<string, string | undefined>, problems: SettingProblem[]): ModelProvider[] {
  const inline = env.MGX_MODEL_PROVIDERS?.trim();
  const file = env.MGX_MODEL_PROVIDERS_FILE?.trim();
  if (!inline && !file) return [];
  const variable = inline ? 'MGX_MODEL_PROVIDERS' : 'MGX_MODEL_PROVIDERS_FILE';
  if (inline && file) {
    problems.push({ variable, message: 'give MGX_MODEL_PROVIDERS or MGX_MODEL_PROVIDERS_FILE, not both' });
    return [];
  }
  let text: string;
  try {
    text = inline ?? readFileSync(file ?? '', 'utf8');
  } catch (err) {
    problems.push({ variable, message: `cannot read ${file}: ${(err as Error).message}` });
    return [];
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    problems.push({ variable, message: 'is not JSON (a list of { name, baseUrl, apiKeyEnv, models })' });
    return [];
  }
  if (!Array.isArray(parsed)) {
    problems.push({ variable, message: 'must be a JSON list of { name, baseUrl, apiKeyEnv, models }' });
    return [];
  }
  const providers: ModelProvider[] = [];
  // an API node only checks sessions against the list: the keys are the workers' alone
  const keysHere = env.MGX_ROLE?.trim() !== 'api';
  parsed.forEach((p: unknown, i) => {
    const bad = (message: string) => problems.push({ variable, message: `provider ${i}: ${message}` });
    if (!isRecord(p)) return bad('is not an object');
    const unknown = Object.keys(p).filter((k) => !['name', 'baseUrl', 'apiKeyEnv', 'apiKeyFile', 'models', 'tenants'].includes(k));
    if (unknown.length > 0) return bad(`unknown field ${JSON.stringify(unknown[0])}`);
    const { name, baseUrl, apiKeyEnv, apiKeyFile, models, tenants } = p;
    if (typeof name !== 'string' || !PROVIDER_NAME.test(name)) return bad('name must be 1-32 lower-case letters, digits, _ or -');
    if (providers.some((x) => x.name === name)) return bad(`name "${name}" is given twice`);
    let url: URL | undefined;
    try {
      url = typeof baseUrl === 'string' ? new URL(baseUrl) : undefined;
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) return bad(`${name}: baseUrl must be an http or https URL`);
    if (!Array.isArray(models) || models.length === 0 || !models.every((m) => typeof m === 'string' && m !== '' && m.length <= 128))
      return bad(`${name}: models must be a non-empty list of model names (or ["*"])`);
    if (tenants !== undefined && (!Array.isArray(tenants) || !tenants.every((t) => typeof t === 'string' && ID_PATTERN.test(t))))
      return bad(`${name}: tenants must be a list of tenant names`);
    let key: string | undefined;
    let keySource: string;
    if (typeof apiKeyEnv === 'string' && apiKeyFile === undefined) {
      if (!ENV_NAME.test(apiKeyEnv)) return bad(`${name}: apiKeyEnv must name an environment variable`);
      keySource = `env ${apiKeyEnv}`;
      key = env[apiKeyEnv];
    } else if (typeof apiKeyFile === 'string' && apiKeyEnv === undefined) {
      keySource = `file ${apiKeyFile}`;
      try {
        key = keysHere ? readFileSync(apiKeyFile, 'utf8').replace(/\r?\n$/, '') : '';
      } catch (err) {
        return bad(`${name}: cannot read apiKeyFile: ${(err as Error).message}`);
      }
    } else return bad(`${name}: give apiKeyEnv or apiKeyFile (one of them)`);
    if (!keysHere) key = '';
    else if (!key) return bad(`${name}: its key (${keySource}) is empty or unset`);
    if (/[\r\n\0]/.test(key ?? '')) return bad(`${name}: its key (${keySource}) contains a newline or NUL`);
    providers.push({
      name,
      baseUrl: url.toString().replace(/\/+$/, ''),
      models: models as string[],
      ...(tenants !== undefined ? { tenants: tenants as string[] } : {}),
      keySource,
      key: new SecretValue(key ?? ''),
    });
  });
  return providers;
}

/** MGX_TENANT_MODEL_LIMITS: `acme:tokens=100000,calls=50;globex:tokens=0` (0: no limit). */
export function parseTenantModelLimits(
  text: string,
  defaults: { tokens: number; calls: number },
  problems: SettingProblem[],
): ModelBudgets['tenants'] {
  const variable = 'MGX_TENANT_MODEL_LIMITS';
  const out: ModelBudgets['tenants'] = {};
  for (const entry of text
    .split(';')
    .map((e) => e.trim())
    .filter(Boolean)) {
    const colon = entry.indexOf(':');
    const tenant = entry.slice(0, colon).trim();
    if (colon < 0 || !ID_PATTERN.test(tenant)) {
      problems.push({ variable, message: `"${entry}": write tenant:tokens=N,calls=M` });
      continue;
    }
    const limits = { ...defaults };
    for (const field of entry.slice(colon + 1).split(',')) {
      const [k = '', v = ''] = field.split('=').map((x) => x.trim());
      if ((k !== 'tokens' && k !== 'calls') || !/^\d{1,12}$/.test(v)) {
        problems.push({ variable, message: `"${entry}": fields are tokens=N and calls=N` });
        continue;
      }
      limits[k] = Number(v);
    }
    out[tenant] = limits;
  }
  return out;
}

/**
 * MGX_EGRESS_ALLOW: the domains sessions may ask to reach. `registry.npmjs.org,*.github.com`
 * for every tenant; `acme:api.acme.com|*.acme.dev;*:registry.npmjs.org` per tenant (`*`: all).
 */
export function parseEgressAllow(text: string, problems: SettingProblem[]): EgressAllow {
  const variable = 'MGX_EGRESS_ALLOW';
  const out: EgressAllow = {};
  const entries = text
    .split(';')
    .map((e) => e.trim())
    .filter(Boolean);
  for (const entry of entries) {
    const colon = entry.indexOf(':');
    const tenant = colon < 0 ? '*' : entry.slice(0, colon).trim();
    const list = (colon < 0 ? entry.split(',') : entry.slice(colon + 1).split(/[|,]/)).map((d) => d.trim().toLowerCase()).filter(Boolean);
    if (tenant !== '*' && !ID_PATTERN.test(tenant)) {
      problems.push({ variable, message: `"${entry}": ${JSON.stringify(tenant)} is not a tenant name` });
      continue;
    }
    const bad = list.filter((d) => d !== '*' && !DOMAIN_PATTERN.test(d));
    if (bad.length > 0) problems.push({ variable, message: `"${entry}": ${JSON.stringify(bad[0])} is not a domain or *.domain` });
    out[tenant] = [...(out[tenant] ?? []), ...list];
  }
  return out;
}

/** Whether `host` matches a pattern: the name itself, or under `*.domain` (not the domain itself); `*` matches all. */
export function domainMatches(pattern: string, host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  if (pattern === '*') return true;
  if (pattern.startsWith('*.')) return h.endsWith(pattern.slice(1));
  return h === pattern;
}

/** Whether the server lets `tenant` put `pattern` on a session's allow-list: a server pattern covers it. */
export function egressAllowed(allow: EgressAllow, tenant: string, pattern: string): boolean {
  const server = [...(allow['*'] ?? []), ...(allow[tenant] ?? [])];
  return server.some((s) => s === '*' || s === pattern || (s.startsWith('*.') && domainMatches(s, pattern.replace(/^\*\./, 'x.'))));
}
