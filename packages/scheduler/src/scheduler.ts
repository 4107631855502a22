import type { Logger, Settings } from '@mgx/config';
import { silentLogger } from '@mgx/config';
import type { SessionRecord, Store } from '@mgx/event-store';
import { CONTAINER_SOCKET_DIR, SOCKET_NAME, type IngestHub } from '@mgx/ingest';
import type { Metrics } from '@mgx/metrics';
import { finishDataOf, type Monitor } from '@mgx/monitor';
import { LABELS, RuntimeError, type ContainerRuntime, type ContainerSpec } from '@mgx/runtime';
import { prepareWorkspace } from './workspaces.js';

export interface SchedulerOptions {
  store: Store;
  runtime: ContainerRuntime;
  ingest: IngestHub;
  monitor: Monitor;
  metrics: Metrics;
  settings: Settings;
  logger?: Logger;
  /** Secrets of queued sessions, held in memory only until their container starts. */
  secrets?: (sessionId: string) => Record<string, string>;
}

/**
 * The queue worker: claims the oldest queued session whenever a slot is free, under
 * AGENT_MAX_CONCURRENT_CONTAINERS, starts its container and hands it to the monitor.
 * Wakes on `notify()` (same process) and polls the store as a fallback (other processes).
 */
export class Scheduler {
  readonly workerId: string;
  readonly #o: SchedulerOptions & { logger: Logger };
  #inUse = 0;
  #running = false;
  #pumping = false;
  #again = false;
  #timer: NodeJS.Timeout | undefined;
  readonly #inflight = new Set<Promise<void>>();

  constructor(options: SchedulerOptions) {
    this.#o = { logger: silentLogger, ...options };
    this.workerId = `${options.settings.owner}`;
  }

  get inUse(): number {
    return this.#inUse;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#o.metrics.concurrencyLimit.set(this.#o.settings.scheduler.maxConcurrent);
    this.#o.metrics.concurrencyInUse.set(0);
    this.#timer = setInterval(() => this.notify(), this.#o.settings.monitor.pollMs);
    this.#timer.unref();
    this.notify();
  }

  /** Stops claiming. Sessions already running keep running (the next start adopts them). */
  async stop(): Promise<void> {
    this.#running = false;
    clearInterval(this.#timer);
    await Promise.allSettled([...this.#inflight]);
  }

  /** Something may be claimable: a session was queued or a slot freed. */
  notify(): void {
    if (!this.#running) return;
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    this.#pumping = true;
    void this.#pump().finally(() => {
      this.#pumping = false;
      if (this.#again) {
        this.#again = false;
        this.notify();
      }
    });
  }

  async #pump(): Promise<void> {
    const max = this.#o.settings.scheduler.maxConcurrent;
    try {
      while (this.#running && this.#inUse < max) {
        const session = await this.#o.store.sessions.claimNext(this.workerId);
        if (!session) break;
        this.#inUse++;
        this.#o.metrics.concurrencyInUse.set(this.#inUse);
        this.#o.metrics.queueWait.observe(Math.max(0, Date.now() - session.createdAt) / 1000);
        const p = this.#launch(session).finally(() => {
          this.#inUse--;
          this.#o.metrics.concurrencyInUse.set(this.#inUse);
          this.#inflight.delete(p);
          this.notify();
        });
        this.#inflight.add(p);
      }
      this.#o.metrics.queueDepth.set(await this.#o.store.sessions.countByStatus('queued'));
    } catch (err) {
      this.#o.logger.error({ err: (err as Error).message }, 'claiming sessions failed');
    }
  }

  /** Runs one claimed session to its end; resolves after teardown. */
  async #launch(session: SessionRecord): Promise<void> {
    const { store, runtime, ingest, monitor, metrics, settings } = this.#o;
    const log = this.#o.logger.child({ sessionId: session.id });
    let containerId: string | undefined;
    try {
      const workspace = await prepareWorkspace(settings.store.dataDir, session.workspaceId, settings.agent.user);
      const { dir } = await ingest.open({
        sessionId: session.id,
        framework: session.framework,
        prompt: session.prompt,
        options: session.options,
        secrets: this.#o.secrets?.(session.id) ?? {},
      });
      const spec: ContainerSpec = {
        name: `mgx-${session.id}`,
        image: settings.agent.image,
        env: {
          MGX_INGEST_SOCKET: `${CONTAINER_SOCKET_DIR}/${SOCKET_NAME}`,
          MGX_WORKSPACE: '/workspace',
          HOME: '/tmp',
        },
        labels: {
          [LABELS.managed]: 'true',
          [LABELS.sessionId]: session.id,
          [LABELS.tenant]: session.tenant,
          [LABELS.owner]: settings.owner,
        },
        user: settings.agent.user,
        workingDir: '/workspace',
        mounts: [
          { hostPath: workspace, containerPath: '/workspace', readOnly: false },
          { hostPath: dir, containerPath: CONTAINER_SOCKET_DIR, readOnly: true },
        ],
        memoryBytes: session.limits.memoryBytes,
        cpuQuota: session.limits.cpuQuota,
        cpuPeriod: settings.agent.cpuPeriod,
        pidsLimit: settings.agent.pidsLimit,
        network: session.network,
        tmpfsBytes: 64 * 1024 * 1024,
      };
      const t0 = performance.now();
      containerId = await runtime.create(spec);
      metrics.containerCreate.observe((performance.now() - t0) / 1000);
      log.info({ containerId }, 'container created');
      await store.sessions.setContainer(session.id, containerId);
      const t1 = performance.now();
      await runtime.start(containerId);
      metrics.containerStart.observe((performance.now() - t1) / 1000);
      const startedAt = Date.now();
      const deadlineAt = startedAt + session.limits.timeoutMs;
      if (!(await store.sessions.markRunning(session.id, startedAt, deadlineAt))) {
        // decided while starting (a cancel): the monitor tears it down with the stored outcome
        log.info({ containerId }, 'session was decided while starting');
      } else {
        await store.events.append(session.id, [{ type: 'CONTAINER_STARTED', data: { containerId, image: spec.image } }]);
      }
      const running = (await store.sessions.getSession(session.id)) ?? session;
      await monitor.watch(running, containerId, startedAt);
    } catch (err) {
      const message = err instanceof RuntimeError ? err.message : `could not start the session: ${(err as Error).message}`;
      log.error({ containerId, err: (err as Error).message, code: (err as { code?: string }).code }, 'session failed to start');
      if (err instanceof RuntimeError) metrics.runtimeErrors.inc({ op: err.op });
      await this.#failStart(session, containerId, message).catch((e: unknown) =>
        log.error({ err: (e as Error).message }, 'cleaning up a failed start failed'),
      );
    }
  }

  /**
   * Brings the store and the engine back in line after a restart, before claiming: every
   * container this owner left behind is ended and removed, every session it held is ended
   * (or re-queued when its container was never created), and a decided session whose
   * FINISH was not yet stored gets it. Nothing is left running or half-finished.
   */
  async reconcile(): Promise<{ requeued: number; ended: number; removed: number; finished: number }> {
    const { store, runtime, ingest, settings } = this.#o;
    const log = this.#o.logger.child({ phase: 'reconcile' });
    const counts = { requeued: 0, ended: 0, removed: 0, finished: 0 };
    const held = await store.sessions.findByStatus(['starting', 'running'], this.workerId);
    for (const s of held) {
      if (s.status === 'starting' && s.containerId === null) {
        if (await store.sessions.requeue(s.id)) counts.requeued++;
        continue;
      }
      const outcome = { status: 'failed', reason: 'lost', message: 'the worker running this session restarted' } as const;
      const res = await store.sessions.decide(s.id, outcome);
      if (res.won) counts.ended++;
    }
    for (const c of await runtime.list({ [LABELS.owner]: settings.owner })) {
      const sessionId = c.labels[LABELS.sessionId];
      if (sessionId) {
        const s = await store.sessions.getSession(sessionId);
        if (s && !['succeeded', 'failed', 'timed_out', 'cancelled'].includes(s.status)) {
          await store.sessions.decide(s.id, { status: 'failed', reason: 'lost', message: 'the worker running this session restarted' });
        }
      }
      await runtime.stop(c.id, settings.agent.stopGraceMs).catch(() => undefined);
      await runtime.remove(c.id);
      counts.removed++;
      log.info({ containerId: c.id, sessionId }, 'removed a container left by a previous run');
    }
    for (const s of await store.sessions.findUnfinished()) {
      await store.sessions.appendFinish(s.id, finishDataOf({
        status: s.status as 'failed',
        reason: s.reason ?? 'lost',
        ...(s.message !== null ? { message: s.message } : {}),
        ...(s.exitCode !== null ? { exitCode: s.exitCode } : {}),
      }));
      await ingest.removeDir(s.id);
      counts.finished++;
    }
    if (counts.requeued + counts.ended + counts.removed + counts.finished > 0) log.info(counts, 'reconciled after restart');
    return counts;
  }

  async #failStart(session: SessionRecord, containerId: string | undefined, message: string): Promise<void> {
    const { store, runtime, ingest, metrics } = this.#o;
    if (containerId) await runtime.remove(containerId).catch(() => {});
    await ingest.close(session.id);
    const outcome = { status: 'failed', reason: 'runtime_error', message } as const;
    const res = await store.sessions.decide(session.id, outcome);
    const s = res.session;
    await store.sessions.appendFinish(
      session.id,
      res.won ? finishDataOf(outcome) : finishDataOf({ status: s.status as 'failed', reason: s.reason ?? 'runtime_error', ...(s.message ? { message: s.message } : {}) }),
    );
    if (res.won) {
      metrics.sessions.inc({ status: 'failed' });
      metrics.sessionReasons.inc({ reason: 'runtime_error' });
    }
  }
}
