import { z } from 'zod';
import {
  DOMAIN_PATTERN,
  egressAllowed,
  formatMemory,
  MIN_CPUS,
  MIN_MEMORY_BYTES,
  minCpuQuota,
  parseMemory,
  type Settings,
} from '@mgx/config';
import type { SessionLimits } from '@mgx/event-store';
import type { FrameworkInfo } from './context.js';
import { envProblem } from './env-policy.js';
import { workspaceId } from './ids.js';

// strict: an unknown key (image, user, binds, …) is refused, never silently ignored
export const createSessionInput = z.strictObject({
  framework: z.string().min(1).max(64),
  prompt: z.string(),
  workspaceId: workspaceId.optional(),
  timeoutSeconds: z.number().positive().optional(),
  idleTimeoutSeconds: z.number().positive().optional(),
  memory: z.union([z.string(), z.number().int().positive()]).optional(),
  cpus: z.number().positive().max(64).optional(),
  options: z.record(z.string(), z.unknown()).optional(),
  env: z.record(z.string(), z.string()).optional(),
  secrets: z.record(z.string(), z.string()).optional(),
  /** `none`, `egress` (a bridge network), or `{ allow: [domains] }`: no network, an egress proxy to those domains. */
  network: z.union([z.enum(['none', 'egress']), z.strictObject({ allow: z.array(z.string().min(1).max(253)).min(1).max(100) })]).optional(),
  /** Model tokens (prompt + completion) its calls through the gateway may use. */
  maxModelTokens: z.number().int().positive().optional(),
  /** Model calls through the gateway. */
  maxModelCalls: z.number().int().positive().optional(),
  /** Record each model call's messages and answer in its MODEL_CALL event (off: counts only). */
  recordModelContent: z.boolean().optional(),
});
export type CreateSessionInput = z.infer<typeof createSessionInput>;

/** Why a request is refused: bad input, too large, or not allowed on this server. */
export type AdmissionCode = 'invalid' | 'too_large' | 'forbidden';

export interface AdmissionProblem {
  /** The input field at fault. */
  field: keyof CreateSessionInput;
  message: string;
  code: AdmissionCode;
}

/** A session as admitted: every limit resolved against the server's defaults and maxima. */
export interface AdmittedSpec {
  framework: string;
  prompt: string;
  /** Absent: the session gets a new workspace named after it. */
  workspaceId: string | undefined;
  options: Record<string, unknown>;
  env: Record<string, string>;
  secrets: Record<string, string>;
  limits: SessionLimits;
  network: 'none' | 'egress';
}

export type Admission = { ok: true; spec: AdmittedSpec } | { ok: false; problems: AdmissionProblem[] };

export interface AdmissionContext {
  /** Whether this process can keep secrets (it runs sessions). */
  secretsAccepted: boolean;
  /** The tenant asking: model providers, budgets and egress domains are granted per tenant. */
  tenant: string;
}

/**
 * The admission rules of a new session: the framework exists, the prompt fits, limits stay
 * within the server's minima and maxima, env and secrets pass the env policy, and network
 * egress is both needed and allowed. Problems are listed in the order the rules are checked.
 */
export function admit(input: CreateSessionInput, settings: Settings, frameworks: FrameworkInfo[], ctx: AdmissionContext): Admission {
  const { agent, limits } = settings;
  const problems: AdmissionProblem[] = [];
  const bad = (field: AdmissionProblem['field'], message: string, code: AdmissionCode = 'invalid') =>
    problems.push({ field, message, code });

  const framework = frameworks.find((f) => f.name === input.framework);
  if (!framework) bad('framework', `unknown framework "${input.framework}"; available: ${frameworks.map((f) => f.name).join(', ')}`);
  const promptBytes = Buffer.byteLength(input.prompt);
  if (promptBytes > limits.maxPromptBytes)
    bad('prompt', `prompt is ${promptBytes} bytes; the limit is ${limits.maxPromptBytes} (MGX_MAX_PROMPT_BYTES)`, 'too_large');

  let memoryBytes = agent.memoryBytes;
  if (input.memory !== undefined) {
    const parsed = typeof input.memory === 'number' ? input.memory : parseMemory(input.memory);
    if (parsed === undefined) bad('memory', `memory "${String(input.memory)}" is not a size (write e.g. 256m or 1g)`);
    else {
      memoryBytes = parsed;
      if (memoryBytes < MIN_MEMORY_BYTES) bad('memory', `memory must be at least ${formatMemory(MIN_MEMORY_BYTES)}`);
      if (memoryBytes > agent.maxMemoryBytes)
        bad('memory', `memory ${formatMemory(memoryBytes)} exceeds the server maximum of ${formatMemory(agent.maxMemoryBytes)}`);
    }
  }

  let timeoutMs = agent.defaultTimeoutMs;
  if (input.timeoutSeconds !== undefined) {
    timeoutMs = Math.round(input.timeoutSeconds * 1000);
    if (timeoutMs > agent.maxTimeoutMs)
      bad('timeoutSeconds', `timeoutSeconds ${input.timeoutSeconds} exceeds the server maximum of ${agent.maxTimeoutMs / 1000}`);
  }
  let idleTimeoutMs: number | undefined;
  if (input.idleTimeoutSeconds !== undefined) {
    idleTimeoutMs = Math.round(input.idleTimeoutSeconds * 1000);
    if (idleTimeoutMs > timeoutMs)
      bad('idleTimeoutSeconds', `idleTimeoutSeconds ${input.idleTimeoutSeconds} exceeds the session's timeout of ${timeoutMs / 1000}`);
  }

  let cpuQuota = agent.cpuQuota;
  if (input.cpus !== undefined) {
    cpuQuota = Math.round(input.cpus * agent.cpuPeriod);
    if (cpuQuota > agent.cpuQuota) bad('cpus', `cpus ${input.cpus} exceeds the server maximum of ${agent.cpuQuota / agent.cpuPeriod}`);
    if (cpuQuota < minCpuQuota(agent.cpuPeriod)) bad('cpus', `cpus must be at least ${MIN_CPUS}`);
  }

  const env = input.env ?? {};
  const envIssue = envProblem(env);
  if (envIssue) bad('env', envIssue);
  const secrets = input.secrets ?? {};
  const secretIssue = envProblem(secrets);
  if (secretIssue) bad('secrets', secretIssue.replace(/^env/, 'secret'));
  if (Object.keys(secrets).length > 0 && !ctx.secretsAccepted)
    bad('secrets', 'this server only accepts sessions; secrets need the process that runs them (MGX_ROLE=all)');

  const requested = input.network ?? 'none';
  const network = typeof requested === 'string' ? requested : 'none';
  // a framework that calls a model reaches it through the gateway when the session names a provider
  const provider = input.options?.provider;
  if (provider !== undefined) {
    const served = settings.models.providers.filter((p) => !p.tenants || p.tenants.includes(ctx.tenant));
    if (typeof provider !== 'string' || !served.some((p) => p.name === provider)) {
      bad(
        'options',
        `options.provider ${JSON.stringify(provider)} is not a model provider of this server for you; ${served.length > 0 ? `yours: ${served.map((p) => p.name).join(', ')}` : 'it has none (MGX_MODEL_PROVIDERS)'}`,
        'forbidden',
      );
    }
  } else if (framework?.requiresEgress && network !== 'egress') {
    bad(
      'network',
      `framework "${input.framework}" needs network egress: create the session with network: "egress", or name a model provider of the server (options.provider)`,
    );
  }
  if (network === 'egress' && !agent.allowEgress)
    bad('network', 'network egress is not allowed on this server (MGX_ALLOW_EGRESS)', 'forbidden');
  let egressAllow: string[] | undefined;
  if (typeof requested === 'object') {
    egressAllow = [...new Set(requested.allow.map((d) => d.trim().toLowerCase().replace(/\.$/, '')))];
    const malformed = egressAllow.find((d) => !DOMAIN_PATTERN.test(d));
    const refused = egressAllow.find((d) => !egressAllowed(settings.egress.allow, ctx.tenant, d));
    if (malformed !== undefined) bad('network', `network.allow: ${JSON.stringify(malformed)} is not a host name or *.domain`);
    else if (refused !== undefined)
      bad(
        'network',
        `network.allow: ${JSON.stringify(refused)} is not a domain this server lets you reach (MGX_EGRESS_ALLOW)`,
        'forbidden',
      );
  }

  // budgets: the session's ask, else the server's default, never above the tenant's maximum (0: none)
  const budgets = settings.models.budgets;
  const most = budgets.tenants[ctx.tenant] ?? { tokens: budgets.maxTokens, calls: budgets.maxCalls };
  const budget = (field: 'maxModelTokens' | 'maxModelCalls', asked: number | undefined, fallback: number, max: number) => {
    if (asked !== undefined && max > 0 && asked > max) bad(field, `${field} ${asked} exceeds your maximum of ${max}`, 'forbidden');
    const value = asked ?? (fallback > 0 ? fallback : max);
    return value > 0 ? Math.min(value, max > 0 ? max : value) : undefined;
  };
  const maxModelTokens = budget('maxModelTokens', input.maxModelTokens, budgets.defaultTokens, most.tokens);
  const maxModelCalls = budget('maxModelCalls', input.maxModelCalls, budgets.defaultCalls, most.calls);

  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    spec: {
      framework: input.framework,
      prompt: input.prompt,
      workspaceId: input.workspaceId,
      options: input.options ?? {},
      env,
      secrets,
      limits: {
        memoryBytes,
        cpuQuota,
        timeoutMs,
        ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
        ...(maxModelTokens !== undefined ? { maxModelTokens } : {}),
        ...(maxModelCalls !== undefined ? { maxModelCalls } : {}),
        ...(input.recordModelContent === true ? { recordModelContent: true } : {}),
        ...(egressAllow !== undefined ? { egressAllow } : {}),
      },
      network,
    },
  };
}
