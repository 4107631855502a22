import { TRPCError, tracked } from '@trpc/server';
import { z } from 'zod';
import { isTerminal, SESSION_STATUSES, type ResourceData } from '@mgx/agent-sdk';
import type { SessionRecord } from '@mgx/event-store';
import { SessionLifecycle } from '@mgx/monitor';
import { admit, createSessionInput, type AdmissionCode } from '../admission.js';
import { newSessionId, sessionId, tenantId } from '../ids.js';
import type { AuthedContext, Trpc } from '../trpc.js';
import { toView, type TopRow } from '../views.js';
import { chunkBySize } from '../stream-hub.js';
import { followStored, streamInput } from './session-streams.js';
import { scopedTenant } from './tenant-scope.js';

const ADMISSION_CODES: Record<AdmissionCode, TRPCError['code']> = {
  invalid: 'BAD_REQUEST',
  too_large: 'PAYLOAD_TOO_LARGE',
  forbidden: 'FORBIDDEN',
};

/** A session the caller may see (its tenant's; any for an operator), or NOT_FOUND, also for another tenant's session. */
async function ownSession(ctx: AuthedContext, id: string): Promise<SessionRecord> {
  const s = await ctx.deps.store.sessions.getSession(id);
  if (!s || (s.tenant !== ctx.tenant && !ctx.operator)) throw new TRPCError({ code: 'NOT_FOUND', message: `session ${id} not found` });
  return s;
}

export function sessionsRouter({ router, authed }: Trpc) {
  return router({
    /** Queues a session; the worker starts it when a slot is free. */
    create: authed.input(createSessionInput).mutation(async ({ ctx, input }) => {
      const { settings, store, metrics, frameworks, worker, secrets: keeper } = ctx.deps;
      const admission = admit(input, settings, frameworks, { secretsAccepted: keeper !== undefined, tenant: ctx.tenant });
      if (!admission.ok) {
        // the first problem, in the order the rules are checked
        const [first] = admission.problems;
        metrics.rejections.inc({ cause: 'invalid_input' });
        throw new TRPCError({ code: first ? ADMISSION_CODES[first.code] : 'BAD_REQUEST', message: first?.message ?? 'invalid session' });
      }
      const { spec } = admission;
      if ((await store.sessions.countByStatus('queued')) >= settings.scheduler.maxQueued) {
        metrics.rejections.inc({ cause: 'queue_full' });
        throw new TRPCError({
          code: 'TOO_MANY_REQUESTS',
          message: `the queue is full (${settings.scheduler.maxQueued} sessions, MGX_MAX_QUEUED_SESSIONS); retry later`,
        });
      }
      const id = newSessionId();
      // the workspace is the caller's, or becomes it; another tenant's is not found (operators may use any)
      const workspaceId = spec.workspaceId ?? id;
      const owned = await store.workspaces.own(workspaceId, ctx.tenant);
      if (owned.tenant !== ctx.tenant && !ctx.operator) {
        metrics.rejections.inc({ cause: 'invalid_input' });
        throw new TRPCError({ code: 'NOT_FOUND', message: `workspace ${workspaceId} not found` });
      }
      const secretCount = Object.keys(spec.secrets).length;
      // kept before the session exists, so no worker can claim it without them
      if (secretCount > 0) keeper?.put(id, spec.secrets);
      const session = await store.sessions.createSession({
        id,
        tenant: ctx.tenant,
        framework: spec.framework,
        prompt: spec.prompt,
        workspaceId,
        options: spec.options,
        env: spec.env,
        limits: spec.limits,
        network: spec.network,
      });
      ctx.deps.logger.info({ sessionId: id, tenant: ctx.tenant, framework: spec.framework, secrets: secretCount }, 'session queued');
      worker.queued();
      return toView(session, false, ctx.operator);
    }),

    get: authed
      .input(z.strictObject({ sessionId }))
      .query(async ({ ctx, input }) => toView(await ownSession(ctx, input.sessionId), true, ctx.operator)),

    /**
     * A signed link to a port the session's agent serves, for an iframe or a new tab: it opens
     * the preview without a bearer token until it expires (default 1 hour).
     */
    previewUrl: authed
      .input(
        z.strictObject({
          sessionId,
          port: z.number().int().min(1).max(65535),
          ttlSeconds: z
            .number()
            .int()
            .min(10)
            .max(7 * 24 * 3600)
            .optional(),
          /** `host`: <port>-<session>.<MGX_PREVIEW_DOMAIN>, the default when that is set; `path`: /sessions/<id>/preview/<port>/. */
          form: z.enum(['path', 'host']).optional(),
        }),
      )
      .mutation(async ({ ctx, input }) => {
        const { preview, settings } = ctx.deps;
        if (!preview) throw new TRPCError({ code: 'NOT_IMPLEMENTED', message: 'this server offers no previews' });
        const { minPort, maxPort } = settings.preview;
        if (input.port < minPort || input.port > maxPort) {
          throw new TRPCError({ code: 'BAD_REQUEST', message: `port ${input.port} is outside the preview ports ${minPort}-${maxPort}` });
        }
        const s = await ownSession(ctx, input.sessionId);
        if (isTerminal(s.status)) throw new TRPCError({ code: 'CONFLICT', message: `session ${s.id} has ended (${s.status})` });
        if (input.form === 'host' && !settings.preview.domain) {
          throw new TRPCError({ code: 'BAD_REQUEST', message: 'host-name previews need MGX_PREVIEW_DOMAIN on the server' });
        }
        const origin = ctx.origin ?? `http://${settings.server.host}:${settings.server.port}`;
        const form = input.form ?? (settings.preview.domain ? 'host' : 'path');
        return { port: input.port, ...preview.link(s.id, input.port, (input.ttlSeconds ?? 3600) * 1000, origin, form) };
      }),

    list: authed
      .input(
        z
          .strictObject({
            status: z.array(z.enum(SESSION_STATUSES)).optional(),
            limit: z.number().int().min(1).max(200).default(50),
            cursor: z.string().max(32).optional(),
            /** Operators only: the tenant whose sessions to list (default for operators: every tenant). */
            tenant: tenantId.optional(),
          })
          .default({ limit: 50 }),
      )
      .query(async ({ ctx, input }) => {
        const tenant = scopedTenant(ctx, input.tenant);
        // a bad cursor is a StoreError the procedure maps to BAD_REQUEST
        const page = await ctx.deps.store.sessions.listSessions({
          ...(tenant !== undefined ? { tenant } : {}),
          limit: input.limit,
          ...(input.status ? { status: input.status } : {}),
          ...(input.cursor !== undefined ? { cursor: input.cursor } : {}),
        });
        return { items: page.items.map((s) => toView(s, false, ctx.operator)), nextCursor: page.nextCursor };
      }),

    /**
     * Running sessions with their last resource sample (the last RESOURCE event: samples that
     * changed nothing material are not stored, so it stays current), for `mgx top`. A tenant
     * sees its own; an operator every tenant's, or the one it names.
     */
    top: authed
      .input(z.strictObject({ limit: z.number().int().min(1).max(200).default(100), tenant: tenantId.optional() }).default({ limit: 100 }))
      .query(async ({ ctx, input }) => {
        const { store } = ctx.deps;
        const tenant = scopedTenant(ctx, input.tenant);
        const page = await store.sessions.listSessions({
          status: ['running'],
          limit: input.limit,
          ...(tenant !== undefined ? { tenant } : {}),
        });
        const items = await Promise.all(
          page.items.map(async (s): Promise<TopRow> => {
            const last = await store.events.lastOfType(s.id, 'RESOURCE');
            return {
              id: s.id,
              ...(ctx.operator ? { tenant: s.tenant } : {}),
              framework: s.framework,
              startedAt: s.startedAt,
              workerId: s.workerId,
              limits: { memoryBytes: s.limits.memoryBytes, cpus: s.limits.cpuQuota / ctx.deps.settings.agent.cpuPeriod },
              resource: last ? { ...(last.data as unknown as ResourceData), at: last.ts } : null,
            };
          }),
        );
        return { now: Date.now(), items };
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
      // starting or running: the worker holding it stops it (here at once, in another process as its store reports the request)
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
        return { events, lastSeq: events.at(-1)?.seq ?? input.afterSeq };
      }),

    /**
     * Backlog then live events over SSE; each event's id is its seq, so a client resumes
     * with `lastEventId` (or the Last-Event-ID header) and gets no gap and no duplicate.
     * Ends after FINISH.
     */
    stream: authed.input(streamInput).subscription(async function* ({ ctx, input, signal }) {
      await ownSession(ctx, input.sessionId);
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
      await ownSession(ctx, input.sessionId);
      for await (const events of followStored(ctx, input, signal)) {
        for (const chunk of chunkBySize(events, 256 * 1024)) {
          const last = chunk.at(-1);
          if (last) yield tracked(String(last.seq), chunk);
        }
      }
    }),
  });
}
