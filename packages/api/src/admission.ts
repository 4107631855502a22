import { z } from 'zod';
import { formatMemory, ID_PATTERN, MIN_CPUS, MIN_MEMORY_BYTES, minCpuQuota, parseMemory, type Settings } from '@mgx/config';
import type { SessionLimits } from '@mgx/event-store';
import type { FrameworkInfo } from './context.js';
import { envProblem } from './env-policy.js';

// strict: an unknown key (image, user, binds, …) is refused, never silently ignored
export const createSessionInput = z.strictObject({
  framework: z.string().min(1).max(64),
  prompt: z.string(),
  workspaceId: z.string().regex(ID_PATTERN, 'workspaceId must be 1-64 letters, digits, _ or -').optional(),
  timeoutSeconds: z.number().positive().optional(),
  idleTimeoutSeconds: z.number().positive().optional(),
  memory: z.union([z.string(), z.number().int().positive()]).optional(),
  cpus: z.number().positive().max(64).optional(),
  options: z.record(z.string(), z.unknown()).optional(),
  env: z.record(z.string(), z.string()).optional(),
  secrets: z.record(z.string(), z.string()).optional(),
  network: z.enum(['none', 'egress']).optional(),
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

  const network = input.network ?? 'none';
  if (framework?.requiresEgress && network !== 'egress')
    bad('network', `framework "${input.framework}" needs network egress: create the session with network: "egress"`);
  if (network === 'egress' && !agent.allowEgress)
    bad('network', 'network egress is not allowed on this server (MGX_ALLOW_EGRESS)', 'forbidden');

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
      limits: { memoryBytes, cpuQuota, timeoutMs, ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}) },
      network,
    },
  };
}
