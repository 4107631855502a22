import type { Trpc } from '../trpc.js';

export function systemRouter({ router, procedure, authed }: Trpc) {
  return router({
    /** Liveness and readiness; no token needed. */
    health: procedure.query(async ({ ctx }) => {
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
  });
}
