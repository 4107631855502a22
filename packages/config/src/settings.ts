import { hostname, availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError, type SettingProblem } from './errors.js';
import { formatMemory, MIN_CPUS, MIN_MEMORY_BYTES, minCpuQuota, parseMemory } from './units.js';

import { ID_PATTERN } from './ids.js';
import {
  parseEgressAllow,
  parseProviders,
  parseTenantModelLimits,
  type EgressAllow,
  type ModelBudgets,
  type ModelProvider,
} from './models.js';

export { ID_PATTERN };

export type EventStoreKind = 'sqlite' | 'mongodb';

/** The limits a warm pool's containers are created with; a session with the same limits can take one. */
export interface PoolSpec {
  memoryBytes: number;
  cpuQuota: number;
  network: 'none' | 'egress';
}
export type ServerRole = 'all' | 'api' | 'worker';
/** What SIGTERM/SIGINT does to a worker: leave its sessions to the next start, or let them finish first. */
export type StopMode = 'handover' | 'drain';

/** Every setting of the platform, validated and typed. Durations are milliseconds. */
export interface Settings {
  agent: {
    image: string;
    memoryBytes: number;
    /** CPU time per 100 ms period, in microseconds (100000 = one CPU). */
    cpuQuota: number;
    cpuPeriod: number;
    pidsLimit: number;
    /** uid:gid the agent runs as; the image's non-root user. */
    user: string;
    defaultTimeoutMs: number;
    maxTimeoutMs: number;
    maxMemoryBytes: number;
    stopGraceMs: number;
    /** How long a container that reported FINISH may take to exit on its own. */
    finishGraceMs: number;
    allowEgress: boolean;
  };
  /** Model providers the gateway calls with their keys, and sessions' token and call budgets. */
  models: { providers: ModelProvider[]; budgets: ModelBudgets };
  /** Domains sessions may reach through the egress proxy, by tenant (`*`: every tenant). */
  egress: { allow: EgressAllow };
  /**
   * `pollMs`: the fallback poll of a running session. `usageIntervalMs`: how often each running
   * container's CPU, memory and pids are sampled (MGX_USAGE_INTERVAL_SECONDS); 0 samples only at its end.
   */
  monitor: { pollMs: number; usageIntervalMs: number };
  /** Warm pool: `size` started, idle containers kept per spec; the server's defaults first. */
  pool: { size: number; specs: PoolSpec[] };
  scheduler: {
    maxConcurrent: number;
    /** Fleet-wide: claimed sessions per tenant, counted in the store; 0 means no limit. */
    maxConcurrentPerTenant: number;
    /** Fleet-wide cap on claimed (starting or running) sessions; 0 means none. */
    maxClaimed: number;
    maxQueued: number;
  };
  /** Workers of a fleet: leases in the shared store, workspaces per host unless shared. */
  fleet: {
    heartbeatMs: number;
    leaseMs: number;
    workspacesShared: boolean;
  };
  /** Previews of apps served inside agent containers, through the session's tunnel. */
  preview: {
    minPort: number;
    maxPort: number;
    maxConnections: number;
    maxBytes: number;
    /** MGX_PREVIEW_DOMAIN: enables `<port>-<session>.<domain>` host names. */
    domain: string | undefined;
    /** The signing key of preview links (MGX_PREVIEW_KEY, or read from MGX_PREVIEW_KEY_FILE). */
    key: string | undefined;
    keyFile: string | undefined;
    /** The longest a signed link may live. */
    maxLinkMs: number;
  };
  limits: { maxEventBytes: number; maxEventsPerSecond: number; maxPromptBytes: number; logCaptureBytes: number };
  /** The workspace files API: what one write, upload or read may move, and each workspace's quota (0: none). */
  files: { maxFileBytes: number; maxUploadBytes: number; maxUploadFiles: number; quotaBytes: number; maxReadBytes: number };
  store: {
    kind: EventStoreKind;
    mongodbUri: string | undefined;
    mongodbDb: string;
    dataDir: string;
    /** Where workspaces live (MGX_WORKSPACE_ROOT); by default <MGX_DATA_DIR>/workspaces. */
    workspaceRoot: string;
    /** Days a terminal session and its events are kept after it ended; 0 keeps them forever. */
    retentionDays: number;
  };
  runtime: { containerHost: string | undefined; dockerHost: string | undefined; xdgRuntimeDir: string | undefined };
  server: {
    host: string;
    port: number;
    role: ServerRole;
    /** MGX_STOP: handover (the next start adopts running sessions) or drain (they finish first). */
    stop: StopMode;
    apiTokens: string | undefined;
    apiTokensFile: string | undefined;
    /** Operators see every tenant's sessions and the fleet (same shape as MGX_API_TOKENS). */
    operatorTokens: string | undefined;
    operatorTokensFile: string | undefined;
    ssePingMs: number;
    /** The address clients use (MGX_PUBLIC_URL), for links the server hands out; else the request's host. */
    publicUrl: string | undefined;
    /** MGX_WORKER_URL: where other processes of the fleet reach this worker (its workspaces' files, its sessions' previews). */
    workerUrl: string | undefined;
    /** MGX_CORS_ORIGINS: origins whose pages may call the API (tRPC, streams, files); none by default. */
    corsOrigins: string[];
    /** MGX_CONSOLE: whether the web console is served at `/`. */
    console: boolean;
  };
  /** Names this platform instance in container labels, so it finds its own containers after a restart. */
  owner: string;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
}

type Env = Record<string, string | undefined>;

const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`));

const seconds = (min: number, max = 7 * 24 * 3600) =>
  z
    .string()
    .trim()
    .regex(/^\d+(\.\d+)?$/, 'must be a number of seconds')
    .transform(Number)
    .pipe(z.number().min(min, `must be at least ${min} s`).max(max, `must be at most ${max} s`))
    .transform((s) => Math.round(s * 1000));

const memory = (minBytes: number) =>
  z.string().transform((text, ctx) => {
    const bytes = parseMemory(text);
    if (bytes === undefined) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is not a memory size (write e.g. 512m or 2g)` });
      return z.NEVER;
    }
    if (bytes < minBytes) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is below the minimum of ${minBytes / 1024 / 1024} MiB` });
      return z.NEVER;
    }
    return bytes;
  });

/** A size in bytes as memory is written (`512m`, `1g`, `1048576`); `0` only where `min` is 0. */
const size = (min: number) =>
  z.string().transform((text, ctx) => {
    const bytes = parseMemory(text);
    if (bytes === undefined || bytes < min) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is not a size of at least ${min} bytes (write e.g. 100m or 1g)` });
      return z.NEVER;
    }
    return bytes;
  });

const bool = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ['1', '0', 'true', 'false', 'yes', 'no'].includes(v), 'must be true or false')
  .transform((v) => v === '1' || v === 'true' || v === 'yes');

const nonEmpty = z.string().trim().min(1, 'must not be empty');

const httpUrl = nonEmpty
  .regex(/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/, 'must be an http(s) URL such as http://10.0.0.5:8080')
  .transform((v) => v.replace(/\/+$/, ''));

/**
 * A comma-separated list of exact origins (`https://app.example.com`, `http://localhost:5173`):
 * scheme, host and port only, compared as browsers send them in `Origin`.
 */
const originList = z.string().transform((text, ctx) => {
  const origins: string[] = [];
  for (const item of text
    .split(',')
    .map((o) => o.trim())
    .filter(Boolean)) {
    let url: URL | undefined;
    try {
      url = new URL(item);
    } catch {
      url = undefined;
    }
    // URL normalises case and drops a default port, as a browser's Origin header does
    if (!url || !/^https?:$/.test(url.protocol) || url.origin !== item.replace(/\/$/, '').toLowerCase() || url.origin === 'null') {
      ctx.addIssue({
        code: 'custom',
        message: `"${item}" is not an origin such as https://app.example.com or http://localhost:5173 (scheme, host and port only)`,
      });
      return z.NEVER;
    }
    origins.push(url.origin);
  }
  return [...new Set(origins)];
});

/** "low-high", a range of TCP ports. */
const portRange = nonEmpty.transform((v, ctx) => {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(v);
  const [min, max] = [Number(m?.[1]), Number(m?.[2])];
  if (!m || !(min >= 1 && max <= 65535 && min <= max)) {
    ctx.addIssue({ code: 'custom', message: 'must be a port range low-high within 1-65535, e.g. 1024-65535' });
    return z.NEVER;
  }
  return { minPort: min, maxPort: max };
});

const socketUrl = nonEmpty.refine(
  (v) => /^(unix:\/\/\/|tcp:\/\/|http:\/\/|https:\/\/|\/)/.test(v),
  'must be unix:///path/to.sock, tcp://host:port or an absolute socket path',
);

function defaultOwner(): string {
  const host = hostname()
    .replace(/[^A-Za-z0-9_-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '');
  return `mgx-${host || 'host'}`.slice(0, 64);
}

/**
 * Reads every setting from `env` once, validates it, and returns typed settings.
 * Throws a ConfigError naming each bad variable and what was wrong with it.
 */
export function loadSettings(env: Env = process.env, cwd: string = process.cwd()): Settings {
  const problems: SettingProblem[] = [];
  const read = <T>(variable: string, schema: z.ZodType<T, string>, fallback: string | undefined): T => {
    const raw = env[variable];
    const text = raw === undefined || raw === '' ? fallback : raw;
    if (text === undefined) return undefined as T;
    const parsed = schema.safeParse(text);
    if (parsed.success) return parsed.data;
    const message = parsed.error.issues.map((i) => i.message).join('; ');
    problems.push({ variable, message: raw === undefined || raw === '' ? `default "${text}": ${message}` : message });
    return undefined as T;
  };

  const cpuPeriod = 100_000;
  const memoryBytes = read('AGENT_CONTAINER_MEMORY_LIMIT', memory(MIN_MEMORY_BYTES), '2g');
  const settings: Settings = {
    agent: {
      image: read('AGENT_CONTAINER_IMAGE', nonEmpty.regex(/^[^\s]+$/, 'must not contain spaces'), 'mgx-agent:latest'),
      memoryBytes,
      cpuQuota: read('AGENT_CONTAINER_CPU_QUOTA', int(minCpuQuota(cpuPeriod), cpuPeriod * 1024), String(cpuPeriod)),
      cpuPeriod,
      pidsLimit: read('AGENT_CONTAINER_PIDS_LIMIT', int(16, 1_000_000), '512'),
      user: read(
        'AGENT_CONTAINER_USER',
        nonEmpty.regex(/^[1-9]\d*:[1-9]\d*$/, 'must be uid:gid of a non-root user, e.g. 10001:10001'),
        '10001:10001',
      ),
      defaultTimeoutMs: read('AGENT_TASK_TIMEOUT_SECONDS', seconds(1), '1800'),
      maxTimeoutMs: read('AGENT_TASK_TIMEOUT_MAX_SECONDS', seconds(1), '14400'),
      // the maximum a session may ask for; by default the per-container default itself
      maxMemoryBytes: read('AGENT_CONTAINER_MEMORY_MAX', memory(MIN_MEMORY_BYTES), undefined) ?? memoryBytes,
      stopGraceMs: read('AGENT_STOP_GRACE_SECONDS', seconds(0, 600), '10'),
      finishGraceMs: read('AGENT_FINISH_GRACE_SECONDS', seconds(0, 600), '5'),
      allowEgress: read('MGX_ALLOW_EGRESS', bool, 'false'),
    },
    models: {
      providers: parseProviders(env, problems),
      budgets: {
        defaultTokens: read('MGX_MODEL_TOKENS_DEFAULT', int(0), '0'),
        defaultCalls: read('MGX_MODEL_CALLS_DEFAULT', int(0), '0'),
        maxTokens: read('MGX_MODEL_TOKENS_MAX', int(0), '0'),
        maxCalls: read('MGX_MODEL_CALLS_MAX', int(0), '0'),
        tenants: {},
      },
    },
    egress: { allow: parseEgressAllow(env.MGX_EGRESS_ALLOW ?? '', problems) },
    monitor: {
      pollMs: read('AGENT_MONITOR_POLL_SECONDS', seconds(0.05, 3600), '2'),
      usageIntervalMs: read('MGX_USAGE_INTERVAL_SECONDS', seconds(0, 3600), '5'),
    },
    pool: { size: read('MGX_WARM_POOL_SIZE', int(0, 64), '0'), specs: [] },
    scheduler: {
      maxConcurrent: read('AGENT_MAX_CONCURRENT_CONTAINERS', int(1, 10_000), String(availableParallelism())),
      maxQueued: read('MGX_MAX_QUEUED_SESSIONS', int(1, 10_000_000), '10000'),
      // 0: no per-tenant limit, only AGENT_MAX_CONCURRENT_CONTAINERS
      maxConcurrentPerTenant: read('MGX_MAX_CONCURRENT_PER_TENANT', int(0, 10_000), '0'),
      maxClaimed: read('MGX_MAX_RUNNING_SESSIONS', int(0, 1_000_000), '0'),
    },
    fleet: {
      heartbeatMs: read('MGX_WORKER_HEARTBEAT_SECONDS', seconds(0.1, 3600), '5'),
      leaseMs: read('MGX_WORKER_LEASE_SECONDS', seconds(0.5, 86_400), '30'),
      workspacesShared: read('MGX_WORKSPACES_SHARED', bool, 'false'),
    },
    preview: {
      ...(read('MGX_PREVIEW_PORTS', portRange, '1024-65535') ?? { minPort: 1024, maxPort: 65535 }),
      maxConnections: read('MGX_PREVIEW_MAX_CONNECTIONS', int(1, 100_000), '64'),
      maxBytes: read('MGX_PREVIEW_MAX_BYTES', memory(1024), '1g'),
      domain: read(
        'MGX_PREVIEW_DOMAIN',
        nonEmpty.regex(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i, 'must be a DNS name such as preview.example.com'),
        undefined,
      ),
      key: read('MGX_PREVIEW_KEY', nonEmpty.min(32, 'must be at least 32 characters'), undefined),
      keyFile: read('MGX_PREVIEW_KEY_FILE', nonEmpty, undefined),
      maxLinkMs: read('MGX_PREVIEW_LINK_MAX_SECONDS', seconds(10), '86400'),
    },
    limits: {
      maxEventBytes: read('MGX_MAX_EVENT_BYTES', int(1024, 64 * 1024 ** 2), String(256 * 1024)),
      maxEventsPerSecond: read('MGX_MAX_EVENTS_PER_SECOND', int(0, 10_000_000), '5000'),
      maxPromptBytes: read('MGX_MAX_PROMPT_BYTES', int(1, 64 * 1024 ** 2), String(1024 ** 2)),
      logCaptureBytes: read('MGX_LOG_CAPTURE_BYTES', int(0, 64 * 1024 ** 2), String(64 * 1024)),
    },
    files: {
      maxFileBytes: read('MGX_MAX_FILE_BYTES', size(1), '100m'),
      maxUploadBytes: read('MGX_MAX_UPLOAD_BYTES', size(1), '1g'),
      maxUploadFiles: read('MGX_MAX_UPLOAD_FILES', int(1, 10_000_000), '100000'),
      quotaBytes: read('MGX_WORKSPACE_QUOTA_BYTES', size(0), '10g'),
      maxReadBytes: read('MGX_MAX_READ_BYTES', size(1), '1m'),
    },
    store: {
      kind: read('MGX_EVENT_STORE', z.enum(['sqlite', 'mongodb'], 'must be sqlite or mongodb'), 'sqlite'),
      mongodbUri: read('MONGODB_URI', nonEmpty.regex(/^mongodb(\+srv)?:\/\//, 'must start with mongodb:// or mongodb+srv://'), undefined),
      mongodbDb: read('MGX_MONGODB_DB', nonEmpty.regex(/^[A-Za-z0-9_-]{1,63}$/, 'must be a plain database name'), 'mgx'),
      dataDir: resolve(cwd, read('MGX_DATA_DIR', nonEmpty, './data') ?? './data'),
      // relative to the data directory's default below when unset
      workspaceRoot: read('MGX_WORKSPACE_ROOT', nonEmpty, undefined) ?? '',
      retentionDays: read('MGX_EVENT_RETENTION_DAYS', int(0, 36_500), '30'),
    },
    runtime: {
      containerHost: read('CONTAINER_HOST', socketUrl, undefined),
      dockerHost: read('DOCKER_HOST', socketUrl, undefined),
      xdgRuntimeDir: read('XDG_RUNTIME_DIR', nonEmpty, undefined),
    },
    server: {
      host: read('MGX_HOST', nonEmpty, '127.0.0.1'),
      port: read('MGX_PORT', int(0, 65535), '8080'),
      role: read('MGX_ROLE', z.enum(['all', 'api', 'worker'], 'must be all, api or worker'), 'all'),
      stop: read('MGX_STOP', z.enum(['handover', 'drain'], 'must be handover or drain'), 'handover'),
      apiTokens: read('MGX_API_TOKENS', nonEmpty, undefined),
      apiTokensFile: read('MGX_API_TOKENS_FILE', nonEmpty, undefined),
      operatorTokens: read('MGX_OPERATOR_TOKENS', nonEmpty, undefined),
      operatorTokensFile: read('MGX_OPERATOR_TOKENS_FILE', nonEmpty, undefined),
      ssePingMs: read('MGX_SSE_PING_SECONDS', seconds(0.1, 300), '10'),
      publicUrl: read('MGX_PUBLIC_URL', httpUrl, undefined),
      workerUrl: read(
        'MGX_WORKER_URL',
        nonEmpty.regex(/^https?:\/\/[^\s/?#]+\/?$/, 'must be http(s)://host:port, with no path'),
        undefined,
      )?.replace(/\/$/, ''),
      corsOrigins: read('MGX_CORS_ORIGINS', originList, undefined) ?? [],
      console: read('MGX_CONSOLE', bool, 'true'),
    },
    owner: read('MGX_OWNER', nonEmpty.regex(ID_PATTERN, 'must be 1-64 letters, digits, _ or -'), defaultOwner()),
    logLevel: read(
      'MGX_LOG_LEVEL',
      z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], 'must be a pino level (info, debug, ...)'),
      'info',
    ),
  };

  const budgets = settings.models.budgets;
  budgets.tenants = parseTenantModelLimits(
    env.MGX_TENANT_MODEL_LIMITS ?? '',
    { tokens: budgets.maxTokens, calls: budgets.maxCalls },
    problems,
  );
  if (problems.length === 0) {
    const defaults: PoolSpec = { memoryBytes: settings.agent.memoryBytes, cpuQuota: settings.agent.cpuQuota, network: 'none' };
    const extra = parsePoolSpecs(env.MGX_WARM_POOL_SPECS ?? '', defaults, settings.agent, problems);
    settings.pool.specs = [defaults, ...extra.filter((x) => poolSpecKey(x) !== poolSpecKey(defaults))];
  }
  settings.store.workspaceRoot = resolve(cwd, settings.store.workspaceRoot || join(settings.store.dataDir, 'workspaces'));
  if (settings.fleet.leaseMs <= 2 * settings.fleet.heartbeatMs) {
    problems.push({
      variable: 'MGX_WORKER_LEASE_SECONDS',
      message: `must be more than twice MGX_WORKER_HEARTBEAT_SECONDS (${settings.fleet.heartbeatMs / 1000}), so one late heartbeat does not lose the lease`,
    });
  }
  if (settings.monitor.usageIntervalMs > 0 && settings.monitor.usageIntervalMs < 500) {
    // each sample is an engine call per running session: a faster rate costs more than it tells
    problems.push({ variable: 'MGX_USAGE_INTERVAL_SECONDS', message: 'must be 0 (sample only at the end) or at least 0.5 s' });
  }
  if (settings.store.kind === 'mongodb' && !settings.store.mongodbUri) {
    problems.push({ variable: 'MONGODB_URI', message: 'is required when MGX_EVENT_STORE=mongodb' });
  }
  if (problems.length === 0) {
    if (settings.agent.maxTimeoutMs < settings.agent.defaultTimeoutMs) {
      problems.push({ variable: 'AGENT_TASK_TIMEOUT_MAX_SECONDS', message: 'must not be below AGENT_TASK_TIMEOUT_SECONDS' });
    }
    if (settings.agent.maxMemoryBytes < settings.agent.memoryBytes) {
      problems.push({ variable: 'AGENT_CONTAINER_MEMORY_MAX', message: 'must not be below AGENT_CONTAINER_MEMORY_LIMIT' });
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return settings;
}

/** A stable name for a pool spec, used as its metric label and container label. */
export function poolSpecKey(spec: PoolSpec): string {
  const mib = Math.round(spec.memoryBytes / 1024 ** 2);
  return `${mib}m-${spec.cpuQuota / 1000}mcpu-${spec.network}`;
}

/**
 * MGX_WARM_POOL_SPECS: more limits to keep warm containers for, besides the defaults.
 * Entries are separated by `;`, fields by `,`: `memory=512m,cpus=0.5;network=egress`.
 * Fields left out take the server's defaults.
 */
function parsePoolSpecs(text: string, defaults: PoolSpec, agent: Settings['agent'], problems: SettingProblem[]): PoolSpec[] {
  const variable = 'MGX_WARM_POOL_SPECS';
  const specs: PoolSpec[] = [];
  for (const entry of text
    .split(';')
    .map((e) => e.trim())
    .filter(Boolean)) {
    const spec = { ...defaults };
    for (const field of entry.split(',').map((f) => f.trim())) {
      const [key, value = ''] = field.split('=').map((x) => x.trim());
      if (key === 'memory') {
        const bytes = parseMemory(value);
        if (bytes === undefined || bytes < MIN_MEMORY_BYTES || bytes > agent.maxMemoryBytes) {
          problems.push({
            variable,
            message: `"${entry}": memory must be a size from ${formatMemory(MIN_MEMORY_BYTES)} to AGENT_CONTAINER_MEMORY_MAX (${formatMemory(agent.maxMemoryBytes)})`,
          });
        } else spec.memoryBytes = bytes;
      } else if (key === 'cpus') {
        const quota = Math.round(Number(value) * agent.cpuPeriod);
        if (!/^\d+(\.\d+)?$/.test(value) || quota < minCpuQuota(agent.cpuPeriod) || quota > agent.cpuQuota) {
          problems.push({ variable, message: `"${entry}": cpus must be a number from ${MIN_CPUS} to ${agent.cpuQuota / agent.cpuPeriod}` });
        } else spec.cpuQuota = quota;
      } else if (key === 'network') {
        if (value !== 'none' && value !== 'egress') problems.push({ variable, message: `"${entry}": network must be none or egress` });
        else if (value === 'egress' && !agent.allowEgress)
          problems.push({ variable, message: `"${entry}": network=egress needs MGX_ALLOW_EGRESS=true` });
        else spec.network = value;
      } else {
        problems.push({ variable, message: `"${entry}": unknown field "${key}" (use memory=, cpus= and network=)` });
      }
    }
    specs.push(spec);
  }
  return specs;
}
