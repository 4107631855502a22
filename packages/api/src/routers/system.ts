import { z } from 'zod';
import type { WorkerRecord } from '@mgx/event-store';
import { workerId } from '../ids.js';
import type { Trpc } from '../trpc.js';

/** What operators see of a worker of the fleet. */
export interface WorkerView {
  id: string;
  hostname: string;
  /** As the store has it: a worker is `dead` once some process declared it so. */
  state: WorkerRecord['state'];
  /** An operator asked it to drain (`system.drainWorker`); it drains at its next heartbeat. */
  drainRequested: boolean;
  /**
   * The lease ran out (no heartbeat in time) while the store still says alive or draining:
   * the worker is lost, and the next reaper pass declares it dead.
   */
  leaseExpired: boolean;
  capacity: number;
  inUse: number;
  lastHeartbeat: number;
  leaseUntil: number;
  engine: string;
  version: string;
  startedAt: number;
}

export function workerView(w: WorkerRecord, now: number): WorkerView {
  return {
    id: w.id,
    hostname: w.hostname,
    state: w.state,
    drainRequested: w.drainRequested,
    leaseExpired: (w.state === 'alive' || w.state === 'draining') && w.leaseUntil < now,
    capacity: w.capacity,
    inUse: w.inUse,
    lastHeartbeat: w.heartbeatAt,
    leaseUntil: w.leaseUntil,
    engine: w.engine,
    version: w.version,
    startedAt: w.startedAt,
  };
}

/** The engine's description without its socket: where it listens is the server's business. */
export function withoutSocket(engine: unknown): unknown {
  if (engine === null || typeof engine !== 'object' || !('socket' in engine)) return engine;
  const { socket: _socket, ...rest } = engine as Record<string, unknown>;
  return rest;
}

export function systemRouter({ router, procedure, authed, operatorProcedure }: Trpc) {
  return router({
    /** Liveness and readiness; no token needed. Server paths (engine socket, store file) only for operators. */
    health: procedure.query(async ({ ctx }) => {
      const checks: Record<string, { ok: boolean; detail?: string }> = {};
      const operator = ctx.tenant !== null && ctx.operator === true;
      const { runtime } = ctx.deps;
      if (!runtime) {
        checks.engine = { ok: true, detail: 'none here: this API node runs no sessions' };
      } else {
        try {
          await runtime.ping();
          checks.engine = { ok: true, detail: operator ? runtime.socket : 'reachable' };
        } catch (err) {
          checks.engine = { ok: false, detail: (err as Error).message };
        }
      }
      checks.store = { ok: true, detail: operator ? ctx.deps.store.describe() : ctx.deps.store.kind };
      const ok = ctx.deps.ready() && Object.values(checks).every((c) => c.ok);
      return { ok, ready: ctx.deps.ready(), checks };
    }),

    /**
     * The version, engine, image, store and limits. Server paths (the store's file, the engine's
     * socket) only for operators: a tenant sees the store's kind and the engine without its socket.
     */
    info: authed.query(async ({ ctx }) => {
      const { settings, runtime, store, version } = ctx.deps;
      let engine: unknown = null;
      let imagePresent: boolean | null = null;
      if (runtime) {
        try {
          engine = await runtime.info();
          imagePresent = await runtime.imageExists(settings.agent.image);
        } catch (err) {
          engine = { error: (err as Error).message };
        }
      }
      return {
        version,
        role: settings.server.role,
        engine: ctx.operator ? engine : withoutSocket(engine),
        image: { name: settings.agent.image, present: imagePresent },
        store: ctx.operator ? store.describe() : store.kind,
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

    /** The workers of the fleet as the shared store has them (operators only). */
    workers: operatorProcedure.query(async ({ ctx }) => {
      const now = Date.now();
      const workers = await ctx.deps.store.workers.list();
      return { now, workers: workers.map((w) => workerView(w, now)) };
    }),

    /**
     * Asks a worker to drain (operators only): at its next heartbeat it claims nothing more, lets
     * its running sessions finish, deregisters and exits. NOT_FOUND for an unknown worker,
     * BAD_REQUEST for one that is dead or stopped.
     */
    drainWorker: operatorProcedure.input(z.object({ workerId })).mutation(async ({ ctx, input }) => {
      const worker = await ctx.deps.store.workers.requestDrain(input.workerId);
      ctx.deps.logger.info({ workerId: worker.id, operator: ctx.tenant }, 'drain requested');
      return { worker: workerView(worker, Date.now()) };
    }),
  });
}
