import { initTRPC, TRPCError, tracked } from '@trpc/server';
import { z } from 'zod';
import { isTerminal, SESSION_STATUSES, type SessionEvent } from '@mgx/agent-sdk';
import { formatMemory, ID_PATTERN, parseMemory } from '@mgx/config';
import { StoreError, StoreErrorCode, type SessionRecord } from '@mgx/event-store';
import { SessionLifecycle } from '@mgx/monitor';
import type { ApiContext } from './context.js';
import { envProblem } from './env-policy.js';
import { newSessionId } from './ids.js';

const sessionId = z.string().regex(ID_PATTERN, 'sessionId must be 1-64 letters, digits, _ or -');

/** What clients see of a session. The prompt only in `get`; secrets never. */
export interface SessionView {
  id: string;
  status: SessionRecord['status'];
  framework: string;
  workspaceId: string;
  network: 'none' | 'egress';
  env: Record<string, string>;
  limits: { memoryBytes: number; cpuQuota: number; timeoutSeconds: number; idleTimeoutSeconds: number | null };
  createdAt: number;
  startedAt: number | null;
  endedAt: number | null;
  deadlineAt: number | null;
  containerId: string | null;
  reason: SessionRecord['reason'];
  exitCode: number | null;
  message: string | null;
  lastSeq: number;
  promptPreview: string;
  prompt?: string;
}

export function toView(s: SessionRecord, withPrompt: boolean): SessionView {
  return {
    id: s.id,
    status: s.status,
    framework: s.framework,
    workspaceId: s.workspaceId,
    network: s.network,
    env: s.env,
    limits: {
      memoryBytes: s.limits.memoryBytes,
      cpuQuota: s.limits.cpuQuota,
      timeoutSeconds: s.limits.timeoutMs / 1000,
      idleTimeoutSeconds: s.limits.idleTimeoutMs !== undefined ? s.limits.idleTimeoutMs / 1000 : null,
    },
    createdAt: s.createdAt,
    startedAt: s.startedAt,
    endedAt: s.endedAt,
    deadlineAt: s.deadlineAt,
    containerId: s.containerId,
    reason: s.reason,
    exitCode: s.exitCode,
    message: s.message,
    lastSeq: s.lastSeq,
    promptPreview: s.prompt.length > 120 ? `${s.prompt.slice(0, 120)}…` : s.prompt,
    ...(withPrompt ? { prompt: s.prompt } : {}),
  };
}

/** The caller's session, or NOT_FOUND, also for another tenant's session. */
async function ownSession(ctx: ApiContext & { tenant: string }, id: string): Promise<SessionRecord> {
  const s = await ctx.deps.store.sessions.getSession(id);
  if (!s || s.tenant !== ctx.tenant) throw new TRPCError({ code: 'NOT_FOUND', message: `session ${id} not found` });
  return s;
}

// strict: an unknown key (image, user, binds, …) is refused, never silently ignored
const createInput = z.strictObject({
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

const streamInput = z.object({
  sessionId,
  lastEventId: z
    .string()
    .regex(/^\d{1,15}$/, 'lastEventId must be a seq number')
    .nullish(),
});

/**
 * Backlog then live events of the caller's session, in stored batches; ends after FINISH.
 * Each event's seq is its SSE id, so a client resumes with `lastEventId` (or the
 * Last-Event-ID header) and gets no gap and no duplicate.
 */
async function* followStored(
  ctx: ApiContext & { tenant: string },
  input: z.infer<typeof streamInput>,
  signal: AbortSignal | undefined,
): AsyncGenerator<SessionEvent[]> {
  await ownSession(ctx, input.sessionId);
  const { metrics, store } = ctx.deps;
  const ac = new AbortController();
  const abort = () => ac.abort();
  signal?.addEventListener('abort', abort, { once: true });
  metrics.sseSubscribers.inc();
  try {
    yield* store.events.tailBatches(input.sessionId, { afterSeq: Number(input.lastEventId ?? 0), signal: ac.signal });
  } finally {
    signal?.removeEventListener('abort', abort);
    ac.abort();
    metrics.sseSubscribers.dec();
  }
}

/** Splits events into runs of at most 500 whose data adds up to about `maxBytes`. */
function chunkBySize(events: SessionEvent[], maxBytes: number): SessionEvent[][] {
  const chunks: SessionEvent[][] = [];
  let current: SessionEvent[] = [];
  let bytes = 0;
  for (const ev of events) {
    const size = JSON.stringify(ev.data).length + 100;
    if (current.length > 0 && (bytes + size > maxBytes || current.length >= 500)) {
      chunks.push(current);
      current = [];
      bytes = 0;
    }
    current.push(ev);
    bytes += size;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}

/** The router's type, for typed clients (`@mgx/client`). */
export type AppRouter = ReturnType<typeof createAppRouter>;

export interface RouterOptions {
  /** SSE keep-alive interval; clients reconnect after 2.5 intervals of silence. */
  ssePingMs: number;
}

/** The API. Built once per server, so its options (keep-alive) come from the settings. */
export function createAppRouter(options: RouterOptions) {
  const t = initTRPC.context<ApiContext>().create({
    sse: {
      // keep-alive so proxies and clients can tell a quiet stream from a dead one
      ping: { enabled: true, intervalMs: options.ssePingMs },
      client: { reconnectAfterInactivityMs: Math.max(5000, options.ssePingMs * 2.5) },
    },
  });

  const authed = t.procedure.use(({ ctx, next }) => {
    if (ctx.tenant === null) {
      ctx.deps.metrics.rejections.inc({ cause: 'unauthorized' });
      throw new TRPCError({ code: 'UNAUTHORIZED', message: 'missing or unknown bearer token' });
    }
    return next({ ctx: { ...ctx, tenant: ctx.tenant } });
  });

  return t.router({
    sessions: t.router({
      /** Queues a session; the worker starts it when a slot is free. */
      create: authed.input(createInput).mutation(async ({ ctx, input }) => {
        const { settings, store, metrics, frameworks, worker } = ctx.deps;
        const bad = (message: string, code: TRPCError['code'] = 'BAD_REQUEST'): never => {
          metrics.rejections.inc({ cause: 'invalid_input' });
          throw new TRPCError({ code, message });
        };
        const framework = frameworks.find((f) => f.name === input.framework);
        if (!framework) bad(`unknown framework "${input.framework}"; available: ${frameworks.map((f) => f.name).join(', ')}`);
        const promptBytes = Buffer.byteLength(input.prompt);
        if (promptBytes > settings.limits.maxPromptBytes) {
          bad(`prompt is ${promptBytes} bytes; the limit is ${settings.limits.maxPromptBytes} (MGX_MAX_PROMPT_BYTES)`, 'PAYLOAD_TOO_LARGE');
        }
        let memoryBytes = settings.agent.memoryBytes;
        if (input.memory !== undefined) {
          const parsed = typeof input.memory === 'number' ? input.memory : parseMemory(input.memory);
          if (parsed === undefined) bad(`memory "${String(input.memory)}" is not a size (write e.g. 256m or 1g)`);
          memoryBytes = parsed!;
          if (memoryBytes < 16 * 1024 ** 2) bad('memory must be at least 16m');
          if (memoryBytes > settings.agent.maxMemoryBytes)
            bad(`memory ${formatMemory(memoryBytes)} exceeds the server maximum of ${formatMemory(settings.agent.maxMemoryBytes)}`);
        }
        let timeoutMs = settings.agent.defaultTimeoutMs;
        if (input.timeoutSeconds !== undefined) {
          timeoutMs = Math.round(input.timeoutSeconds * 1000);
          if (timeoutMs > settings.agent.maxTimeoutMs)
            bad(`timeoutSeconds ${input.timeoutSeconds} exceeds the server maximum of ${settings.agent.maxTimeoutMs / 1000}`);
        }
        let idleTimeoutMs: number | undefined;
        if (input.idleTimeoutSeconds !== undefined) {
          idleTimeoutMs = Math.round(input.idleTimeoutSeconds * 1000);
          if (idleTimeoutMs > timeoutMs)
            bad(`idleTimeoutSeconds ${input.idleTimeoutSeconds} exceeds the session's timeout of ${timeoutMs / 1000}`);
        }
        let cpuQuota = settings.agent.cpuQuota;
        if (input.cpus !== undefined) {
          cpuQuota = Math.round(input.cpus * settings.agent.cpuPeriod);
          if (cpuQuota > settings.agent.cpuQuota)
            bad(`cpus ${input.cpus} exceeds the server maximum of ${settings.agent.cpuQuota / settings.agent.cpuPeriod}`);
          if (cpuQuota < 1000) bad('cpus must be at least 0.01');
        }
        const env = input.env ?? {};
        const envIssue = envProblem(env);
        if (envIssue) bad(envIssue);
        const secrets = input.secrets ?? {};
        const secretIssue = envProblem(secrets);
        if (secretIssue) bad(secretIssue.replace(/^env/, 'secret'));
        if (Object.keys(secrets).length > 0 && !ctx.deps.secrets)
          bad('this server only accepts sessions; secrets need the process that runs them (MGX_ROLE=all)');
        const network = input.network ?? 'none';
        if (framework!.requiresEgress && network !== 'egress')
          bad(`framework "${input.framework}" needs network egress: create the session with network: "egress"`);
        if (network === 'egress' && !settings.agent.allowEgress)
          bad('network egress is not allowed on this server (MGX_ALLOW_EGRESS)', 'FORBIDDEN');
        if ((await store.sessions.countByStatus('queued')) >= settings.scheduler.maxQueued) {
          metrics.rejections.inc({ cause: 'queue_full' });
          throw new TRPCError({
            code: 'TOO_MANY_REQUESTS',
            message: `the queue is full (${settings.scheduler.maxQueued} sessions, MGX_MAX_QUEUED_SESSIONS); retry later`,
          });
        }
        const id = newSessionId();
        // kept before the session exists, so no worker can claim it without them
        if (Object.keys(secrets).length > 0) ctx.deps.secrets!.put(id, secrets);
        const session = await store.sessions.createSession({
          id,
          tenant: ctx.tenant,
          framework: input.framework,
          prompt: input.prompt,
          workspaceId: input.workspaceId ?? id,
          options: input.options ?? {},
          env,
          limits: { memoryBytes, cpuQuota, timeoutMs, ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}) },
          network,
        });
        ctx.deps.logger.info(
          { sessionId: id, tenant: ctx.tenant, framework: input.framework, secrets: Object.keys(secrets).length },
          'session queued',
        );
        worker.queued();
        return toView(session, false);
      }),

      get: authed
        .input(z.strictObject({ sessionId }))
        .query(async ({ ctx, input }) => toView(await ownSession(ctx, input.sessionId), true)),

      list: authed
        .input(
          z
            .strictObject({
              status: z.array(z.enum(SESSION_STATUSES)).optional(),
              limit: z.number().int().min(1).max(200).default(50),
              cursor: z.string().max(32).optional(),
            })
            .default({ limit: 50 }),
        )
        .query(async ({ ctx, input }) => {
          try {
            const page = await ctx.deps.store.sessions.listSessions({
              tenant: ctx.tenant,
              limit: input.limit,
              ...(input.status ? { status: input.status } : {}),
              ...(input.cursor !== undefined ? { cursor: input.cursor } : {}),
            });
            return { items: page.items.map((s) => toView(s, false)), nextCursor: page.nextCursor };
          } catch (err) {
            if (err instanceof StoreError && err.code === StoreErrorCode.INVALID_CURSOR)
              throw new TRPCError({ code: 'BAD_REQUEST', message: err.message });
            throw err;
          }
        }),

      /** Cancels a queued session (it never starts) or a running one (stopped, FINISH cancelled). */
      cancel: authed.input(z.strictObject({ sessionId })).mutation(async ({ ctx, input }) => {
        const { store, worker } = ctx.deps;
        const s = await ownSession(ctx, input.sessionId);
        if (isTerminal(s.status)) return { sessionId: s.id, status: s.status, cancelled: false };
        await store.sessions.requestCancel(s.id);
        // only from the queue: once a worker holds the session, that worker ends it
        const queued = await new SessionLifecycle(ctx.deps).end(
          s.id,
          { status: 'cancelled', reason: 'cancelled', message: 'the session was cancelled before it started' },
          { from: ['queued'], events: [{ type: 'CANCELLED', data: { while: 'queued' } }], ifLost: 'leave' },
        );
        if (queued.won) return { sessionId: s.id, status: 'cancelled' as const, cancelled: true };
        // starting or running: the worker holding it stops it (here at once, elsewhere on its next poll)
        worker.cancelRunning(s.id);
        return { sessionId: s.id, status: queued.session.status, cancelled: true };
      }),

      /** Stored events after `afterSeq`, oldest first. */
      events: authed
        .input(
          z.strictObject({
            sessionId,
            afterSeq: z.number().int().min(0).default(0),
            limit: z.number().int().min(1).max(1000).default(500),
          }),
        )
        .query(async ({ ctx, input }) => {
          await ownSession(ctx, input.sessionId);
          const events = await ctx.deps.store.events.read(input.sessionId, input.afterSeq, input.limit);
          return { events, lastSeq: events.length > 0 ? events[events.length - 1]!.seq : input.afterSeq };
        }),

      /**
       * Backlog then live events over SSE; each event's id is its seq, so a client resumes
       * with `lastEventId` (or the Last-Event-ID header) and gets no gap and no duplicate.
       * Ends after FINISH.
       */
      stream: authed.input(streamInput).subscription(async function* ({ ctx, input, signal }) {
        for await (const events of followStored(ctx, input, signal)) {
          for (const ev of events) yield tracked(String(ev.seq), ev);
        }
      }),

      /**
       * The same stream with several events per SSE message, as they were stored: the id of
       * a message is the seq of its last event, so resuming works the same way. Each message
       * costs the server about as much as one event does on `stream`, so followers of busy
       * sessions (and `followSession`) use this. A message holds at most 500 events or about
       * 256 KiB of event data, unless one event is bigger on its own.
       */
      streamBatches: authed.input(streamInput).subscription(async function* ({ ctx, input, signal }) {
        for await (const events of followStored(ctx, input, signal)) {
          for (const chunk of chunkBySize(events, 256 * 1024)) yield tracked(String(chunk.at(-1)!.seq), chunk);
        }
      }),
    }),

    frameworks: t.router({
      list: authed.query(({ ctx }) => ctx.deps.frameworks),
    }),

    system: t.router({
      /** Liveness and readiness; no token needed. */
      health: t.procedure.query(async ({ ctx }) => {
        const checks: Record<string, { ok: boolean; detail?: string }> = {};
        try {
          await ctx.deps.runtime.ping();
          checks.engine = { ok: true, detail: ctx.deps.runtime.socket };
        } catch (err) {
          checks.engine = { ok: false, detail: (err as Error).message };
        }
        checks.store = { ok: true, detail: ctx.deps.store.describe() };
        const ok = ctx.deps.ready() && Object.values(checks).every((c) => c.ok);
        return { ok, ready: ctx.deps.ready(), checks };
      }),

      info: authed.query(async ({ ctx }) => {
        const { settings, runtime, store, version } = ctx.deps;
        let engine: unknown = null;
        let imagePresent: boolean | null = null;
        try {
          engine = await runtime.info();
          imagePresent = await runtime.imageExists(settings.agent.image);
        } catch (err) {
          engine = { error: (err as Error).message };
        }
        return {
          version,
          role: settings.server.role,
          engine,
          image: { name: settings.agent.image, present: imagePresent },
          store: store.describe(),
          limits: {
            maxConcurrent: settings.scheduler.maxConcurrent,
            maxQueued: settings.scheduler.maxQueued,
            defaultTimeoutSeconds: settings.agent.defaultTimeoutMs / 1000,
            maxTimeoutSeconds: settings.agent.maxTimeoutMs / 1000,
            memoryBytes: settings.agent.memoryBytes,
            maxMemoryBytes: settings.agent.maxMemoryBytes,
            cpuQuota: settings.agent.cpuQuota,
            maxPromptBytes: settings.limits.maxPromptBytes,
            maxEventBytes: settings.limits.maxEventBytes,
            allowEgress: settings.agent.allowEgress,
          },
          // sessions with exactly these limits and a new workspace start on a ready container
          warmPool: settings.pool.size > 0 ? { size: settings.pool.size, specs: settings.pool.specs } : null,
        };
      }),
    }),
  });
}
