import type { Logger, Settings } from '@mgx/config';
import { silentLogger } from '@mgx/config';
import { isTerminal } from '@mgx/agent-sdk';
import type { ClaimOptions, ClaimRef, SessionRecord, Store } from '@mgx/event-store';
import type { IngestHub, SessionTask } from '@mgx/ingest';
import { timed, type Metrics } from '@mgx/metrics';
import { outcomeOfRecord, SessionLifecycle, type Monitor } from '@mgx/monitor';
import { LABELS, RuntimeError, type ContainerRuntime } from '@mgx/runtime';
import { agentContainerSpec } from './container-spec.js';
import { settleWorker } from './reaper.js';
import type { WarmPool } from './warm-pool.js';
import { prepareWorkspace, workspacePath } from './workspaces.js';
import type { WorkerLease } from './worker-lease.js';

export interface SchedulerOptions {
  store: Store;
  runtime: ContainerRuntime;
  ingest: IngestHub;
  monitor: Monitor;
  metrics: Metrics;
  settings: Settings;
  logger?: Logger;
  /** The secrets a session's runner receives, from memory (they are never stored). */
  secrets?: (session: SessionRecord) => Record<string, string>;
  /** Called before a session's socket opens (a start or an adoption): services it uses get ready for it. */
  opening?: (session: SessionRecord) => void;
  /** Then, for a session taken over after a restart: what it used before is read back. */
  resuming?: (session: SessionRecord) => Promise<void>;
  /** Called once a session this worker held has ended and been torn down. */
  ended?: (sessionId: string) => void;
  /** Started containers to hand to sessions instead of creating one (MGX_WARM_POOL_SIZE). */
  pool?: WarmPool | undefined;
  /**
   * This worker's lease in the store (a fleet): registered before reconcile, renewed by
   * heartbeats; claims happen only while it holds. Without it the worker claims freely.
   */
  lease?: WorkerLease | undefined;
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
  /** Slots held per tenant, for MGX_MAX_CONCURRENT_PER_TENANT. */
  readonly #byTenant = new Map<string, number>();
  #running = false;
  #pumping = false;
  #again = false;
  #timer: NodeJS.Timeout | undefined;
  /** Claims that failed in a row, and when the next may be tried: a failing store is asked less often. */
  #claimFailures = 0;
  #claimRetryAt = 0;
  readonly #inflight = new Set<Promise<void>>();
  /** Launches between claim and monitor.watch; shutdown waits for these only. */
  readonly #starting = new Set<Promise<void>>();
  readonly #lifecycle: SessionLifecycle;

  constructor(options: SchedulerOptions) {
    this.#o = { logger: silentLogger, ...options };
    this.#lifecycle = new SessionLifecycle({ store: options.store, metrics: options.metrics });
    this.workerId = `${options.settings.owner}`;
  }

  get inUse(): number {
    return this.#inUse;
  }

  /**
   * Registers this worker (a new epoch), before reconcile. If its previous life was declared
   * dead, the sessions it held were settled by the process that declared it (lost, or back
   * in the queue); whatever that process did not get to is settled here the same way, so the
   * reconcile that follows adopts nothing and removes their containers. A previous lease still
   * alive (a restart within it, or nobody noticed) leaves the sessions to reconcile to adopt.
   */
  async register(): Promise<void> {
    const lease = this.#o.lease;
    if (!lease) return;
    const { previous } = await lease.register();
    // renewed from now on: reconcile can take longer than a lease on a busy engine
    lease.start();
    if (previous?.state === 'dead') {
      this.#o.logger.warn(
        { workerId: this.workerId, epoch: lease.epoch, previousEpoch: previous.epoch },
        'this worker was declared dead while it was away: its sessions were settled and nothing of them is adopted',
      );
      await settleWorker(
        {
          store: this.#o.store,
          metrics: this.#o.metrics,
          workspacesShared: this.#o.settings.fleet.workspacesShared,
          logger: this.#o.logger,
        },
        previous,
      );
    }
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#o.lease?.start();
    this.#o.metrics.concurrencyLimit.set(this.#o.settings.scheduler.maxConcurrent);
    this.#o.metrics.concurrencyInUse.set(0);
    this.#timer = setInterval(() => this.notify(), this.#o.settings.monitor.pollMs);
    this.#timer.unref();
    this.notify();
  }

  /**
   * Stops claiming and waits for launches in progress to reach their container. Sessions
   * already running keep running; the next start adopts them. With `drain` the worker also
   * says so in the store (state draining) and keeps its lease while its sessions finish.
   * Heartbeats go on until `release`.
   */
  async stop(options: { drain?: boolean } = {}): Promise<void> {
    this.#running = false;
    clearInterval(this.#timer);
    if (options.drain) await this.#o.lease?.drain();
    await Promise.allSettled([...this.#starting]);
  }

  /**
   * Stops the heartbeats. `deregister` (after a drain, nothing held) releases the lease: the
   * worker shows as stopped and nothing is left to settle. Without it the lease stays in the
   * store until it runs out, so a start within it adopts the sessions left running; after it,
   * another process declares this worker dead and settles them.
   */
  async release(options: { deregister?: boolean } = {}): Promise<void> {
    await this.#o.lease?.stop({ deregister: options.deregister === true && this.#inUse === 0 });
  }

  /** Resolves when every session this worker holds has ended (tests, drain on shutdown). */
  async idle(): Promise<void> {
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
    // a store locked past its busy timeout blocks the event loop on every write: back off
    if (Date.now() < this.#claimRetryAt) return;
    try {
      while (this.#running && this.#inUse < max && (this.#o.lease?.canClaim() ?? true)) {
        const options = this.#claimOptions();
        const session = await timed(this.#o.metrics.claimDuration, () => this.#o.store.sessions.claimNext(this.workerId, options));
        if (!session) break;
        // the claim's writes that follow hold only while this worker keeps the epoch it claimed under
        const claim: ClaimRef = { workerId: this.workerId, epoch: options.lease?.epoch };
        this.#hold(session.tenant);
        this.#o.metrics.concurrencyInUse.set(this.#inUse);
        this.#o.metrics.queueWait.observe(Math.max(0, Date.now() - session.createdAt) / 1000);
        const p = this.#launch(session, claim).finally(() => {
          this.#o.ended?.(session.id);
          this.#release(session.tenant);
          this.#inflight.delete(p);
          this.notify();
        });
        this.#inflight.add(p);
      }
      this.#o.metrics.queueDepth.set(await this.#o.store.sessions.countByStatus('queued'));
      this.#claimFailures = 0;
    } catch (err) {
      this.#claimFailures++;
      const pollMs = this.#o.settings.monitor.pollMs;
      this.#claimRetryAt = Date.now() + Math.min(pollMs * 2 ** this.#claimFailures, 30_000) - pollMs;
      this.#o.logger.error({ err, retryInMs: this.#claimRetryAt - Date.now() }, 'claiming sessions failed');
    }
  }

  /** Runs one claimed session to its end; resolves after teardown. */
  async #launch(session: SessionRecord, claim: ClaimRef): Promise<void> {
    const { store, runtime, ingest, monitor, metrics, settings } = this.#o;
    const log = this.#o.logger.child({ sessionId: session.id });
    let containerId: string | undefined;
    let started!: () => void;
    const starting = new Promise<void>((r) => (started = r));
    this.#starting.add(starting);
    void starting.then(() => this.#starting.delete(starting));
    try {
      const limits = { memoryBytes: session.limits.memoryBytes, cpuQuota: session.limits.cpuQuota, network: session.network };
      const workspace = workspacePath(settings.store.workspaceRoot, session.workspaceId);
      const taken = this.#o.pool ? await this.#o.pool.take(limits, { workspace, socketDir: ingest.dirFor(session.id) }) : undefined;
      const warmId = taken && 'containerId' in taken ? taken.containerId : undefined;
      // known before anything else can fail, so a failed start removes it
      containerId = warmId;
      // a pooled container's workspace was made and handed to the agent's user by the pool
      if (warmId === undefined) await prepareWorkspace(settings.store.workspaceRoot, session.workspaceId, settings.agent.user);
      this.#o.opening?.(session);
      if (warmId !== undefined) {
        // started and waiting: the socket opened in its directory is its session
        await ingest.open(this.#taskOf(session), { fresh: true });
        containerId = warmId;
        log.info({ containerId }, 'session took a warm pool container');
        if ((await store.sessions.setContainer(session.id, containerId, claim)) === 'lost') {
          return await this.#abandon(session, containerId, 'recording its container');
        }
        // labels are fixed at create; the name tells operators whose container it is now
        void runtime
          .rename(containerId, `mgx-${session.id}`)
          .catch((err: unknown) => log.warn({ containerId, err }, 'could not rename a warm pool container'));
      } else {
        const dir = ingest.dirFor(session.id);
        const spec = agentContainerSpec(settings, {
          name: `mgx-${session.id}`,
          labels: {
            [LABELS.managed]: 'true',
            [LABELS.sessionId]: session.id,
            [LABELS.tenant]: session.tenant,
            [LABELS.owner]: settings.owner,
          },
          workspace,
          socketDir: dir,
          limits,
        });
        // the socket is made while the engine creates the container (open makes the mounted
        // directory before it yields); both are done before the start, so the runner finds it
        const t0 = performance.now();
        const [opened, created] = await Promise.allSettled([
          ingest.open(this.#taskOf(session), { fresh: true }),
          runtime.create(spec).then((id) => {
            metrics.containerCreate.observe((performance.now() - t0) / 1000);
            return id;
          }),
        ]);
        if (created.status === 'rejected') throw created.reason;
        containerId = created.value;
        // a socket that failed to open: the failed start's clean-up removes the container
        if (opened.status === 'rejected') throw opened.reason;
        log.info({ containerId }, 'container created');
        // before the start, not beside it: a worker that lost its claim (declared dead) must
        // not start an agent that its session's new holder starts too
        if ((await store.sessions.setContainer(session.id, containerId, claim)) === 'lost') {
          return await this.#abandon(session, containerId, 'recording its container');
        }
        const t1 = performance.now();
        await runtime.start(containerId);
        metrics.containerStart.observe((performance.now() - t1) / 1000);
      }
      const startedAt = Date.now();
      const deadlineAt = startedAt + session.limits.timeoutMs;
      const marked = await store.sessions.markRunning(session.id, startedAt, deadlineAt, claim);
      if (marked === 'lost') return await this.#abandon(session, containerId, 'marking it running');
      if (marked === 'decided') {
        // decided while starting (a cancel): the monitor tears it down with the stored outcome
        log.info({ containerId }, 'session was decided while starting');
      } else {
        await store.events.append(session.id, [
          { type: 'CONTAINER_STARTED', data: { containerId, image: settings.agent.image, warm: warmId !== undefined } },
        ]);
      }
      const running = (await store.sessions.getSession(session.id)) ?? session;
      const watched = monitor.watch(running, containerId, startedAt);
      started();
      await watched;
    } catch (err) {
      started();
      const message = err instanceof RuntimeError ? err.message : `could not start the session: ${(err as Error).message}`;
      log.error({ containerId, err, code: (err as { code?: string }).code }, 'session failed to start');
      if (err instanceof RuntimeError) metrics.runtimeErrors.inc({ op: err.op });
      await this.#failStart(session, claim, containerId, message).catch((e: unknown) =>
        log.error({ err: e }, 'cleaning up a failed start failed'),
      );
    } finally {
      // an abandoned start returns early
      started();
    }
  }

  /**
   * The claim was lost while starting: this worker was declared dead (paused or cut off past its
   * lease) and its sessions settled, or it registered again since. The session is no longer its
   * own (back in the queue, another worker's, or ended by the settlement), so it removes the
   * container it started and writes nothing more for it.
   */
  async #abandon(session: SessionRecord, containerId: string | undefined, step: string): Promise<void> {
    const { runtime, ingest, logger } = this.#o;
    logger.warn(
      { sessionId: session.id, containerId, step, workerId: this.workerId },
      'this worker lost its claim on the session while starting it (declared dead, or registered again since): removing its container and leaving the session to whoever holds it now',
    );
    if (containerId !== undefined) {
      await runtime.remove(containerId).catch((err: unknown) => logger.error({ err, containerId }, 'removing the container failed'));
    }
    await ingest.close(session.id);
  }

  /**
   * Brings the store and the engine back in line after a restart, before claiming. Sessions
   * this owner was running are adopted: their socket is opened again in the same directory
   * (the runner reconnects and re-sends what was not acknowledged) and the monitor watches
   * them with the time left to their deadline, or tears down one that was already decided.
   * A claim that never got a container goes back to the queue. Every other container with
   * this owner's label is removed, and a decided session whose FINISH was not stored gets it.
   */
  async reconcile(): Promise<{ adopted: number; requeued: number; lost: number; removed: number; finished: number }> {
    const { store, runtime, ingest, settings } = this.#o;
    const log = this.#o.logger.child({ phase: 'reconcile' });
    const counts = { adopted: 0, requeued: 0, lost: 0, removed: 0, finished: 0 };
    const adopted = new Set<string>();
    /** Containers already accounted for, whatever their labels say. */
    const handled = new Set<string>();
    const containers = await runtime.list({ [LABELS.owner]: settings.owner });
    // this worker's claims from earlier lives, adopted under the epoch it registered with now
    const claim: ClaimRef = { workerId: this.workerId, epoch: this.#o.lease?.epoch };
    const bySession = new Map(containers.map((c) => [c.labels[LABELS.sessionId] ?? '', c]));

    for (const s of await store.sessions.findByStatus(['starting', 'running'], this.workerId)) {
      const c = s.containerId ? (containers.find((x) => x.id === s.containerId) ?? bySession.get(s.id)) : bySession.get(s.id);
      if (c) handled.add(c.id);
      if (s.status === 'starting' && (!c || c.state !== 'running')) {
        // never got going: back to the queue, in its old place
        if (c) await runtime.remove(c.id);
        if ((await store.sessions.requeue(s.id, claim)) === 'done') counts.requeued++;
        if (c) bySession.delete(s.id);
        continue;
      }
      if (!c) {
        // decided here, finished (and counted) with the others below
        const res = await this.#lifecycle.decide(s.id, {
          status: 'failed',
          reason: 'lost',
          message: 'the container of this session disappeared while the worker was down',
        });
        if (res.won) counts.lost++;
        continue;
      }
      if (
        s.status === 'starting' &&
        (await store.sessions.markRunning(s.id, Date.now(), Date.now() + s.limits.timeoutMs, claim)) === 'lost'
      ) {
        // declared dead while reconciling: the settlement has the session
        await this.#abandon(s, c.id, 'adopting it');
        continue;
      }
      adopted.add(s.id);
      counts.adopted++;
      await this.#adopt((await store.sessions.getSession(s.id)) ?? s, c.id);
    }

    // a warm-pool container carries no session label: the store knows which session took it
    const byContainer = new Map<string, SessionRecord>();
    for (const s of await store.sessions.findUnfinished()) if (s.containerId) byContainer.set(s.containerId, s);
    // removed side by side: finished sessions' containers are removed after their FINISH, so a
    // process killed just after some leaves several, and the next start waits for these
    const removals: Array<Promise<void>> = [];
    for (const c of containers) {
      if (handled.has(c.id)) continue;
      const sessionId = c.labels[LABELS.sessionId] ?? byContainer.get(c.id)?.id ?? '';
      if (adopted.has(sessionId)) continue;
      if (!sessionId && c.labels[LABELS.pool]) {
        // idle in the pool of the previous process: nothing of any session is in it
        removals.push(runtime.remove(c.id));
        counts.removed++;
        continue;
      }
      const s = sessionId ? await store.sessions.getSession(sessionId) : null;
      if (s && s.finishSeq === null && isTerminal(s.status)) {
        // decided before the restart, not torn down yet: finish the teardown
        adopted.add(s.id);
        counts.adopted++;
        await this.#adopt(s, c.id);
        continue;
      }
      removals.push(
        (async () => {
          // one that has exited (a finished session's) has nothing left to stop
          if (c.state === 'running') await runtime.stop(c.id, settings.agent.stopGraceMs).catch(() => undefined);
          await runtime.remove(c.id);
          log.info({ containerId: c.id, sessionId }, 'removed a container left by a previous run');
        })(),
      );
      counts.removed++;
    }
    await Promise.all(removals);

    for (const s of await store.sessions.findUnfinished()) {
      if (adopted.has(s.id)) continue;
      await this.#lifecycle.finish(s.id, outcomeOfRecord(s, 'lost'));
      await ingest.removeDir(s.id);
      counts.finished++;
    }
    // an agent's FINISH is stored before its container exits and its socket closes: a process
    // that ended in between left the directory of a finished session
    for (const id of ingest.dirs()) {
      if (adopted.has(id) || ingest.isOpen(id)) continue;
      const s = await store.sessions.getSession(id);
      if (s && s.finishSeq !== null) await ingest.removeDir(id);
    }
    if (Object.values(counts).some((n) => n > 0)) log.info(counts, 'reconciled after restart');
    return counts;
  }

  #hold(tenant: string): void {
    this.#inUse++;
    this.#byTenant.set(tenant, (this.#byTenant.get(tenant) ?? 0) + 1);
    this.#o.metrics.concurrencyInUse.set(this.#inUse);
  }

  #release(tenant: string): void {
    this.#inUse--;
    const n = (this.#byTenant.get(tenant) ?? 1) - 1;
    if (n > 0) this.#byTenant.set(tenant, n);
    else this.#byTenant.delete(tenant);
    this.#o.metrics.concurrencyInUse.set(this.#inUse);
  }

  /**
   * The fleet's rules for a claim, applied by the store in the same step: the per-tenant
   * limit and the cap count every worker's claims; the lease's epoch makes a worker declared
   * dead claim nothing; workspaces stay with the host that holds them unless shared. The
   * tenants this worker alone has filled are skipped before asking (a cheap pre-filter).
   */
  #claimOptions(): ClaimOptions {
    const { scheduler, fleet } = this.#o.settings;
    const epoch = this.#o.lease?.epoch;
    return {
      excludeTenants: this.#fullTenants(),
      maxPerTenant: scheduler.maxConcurrentPerTenant,
      maxClaimed: scheduler.maxClaimed,
      ...(epoch !== undefined ? { lease: { epoch } } : {}),
      workspaces: { shared: fleet.workspacesShared },
    };
  }

  /** Tenants at their own limit: their queued sessions wait, others' go ahead of them. */
  #fullTenants(): string[] {
    const limit = this.#o.settings.scheduler.maxConcurrentPerTenant;
    if (limit <= 0) return [];
    return [...this.#byTenant].filter(([, n]) => n >= limit).map(([t]) => t);
  }

  /** What the runner receives over its socket: never through env or labels. */
  #taskOf(session: SessionRecord): SessionTask {
    return {
      sessionId: session.id,
      framework: session.framework,
      prompt: session.prompt,
      options: session.options,
      env: session.env,
      secrets: this.#o.secrets?.(session) ?? {},
    };
  }

  /** Watches a session found running after a restart; it holds a slot like any other. */
  async #adopt(session: SessionRecord, containerId: string): Promise<void> {
    const log = this.#o.logger.child({ sessionId: session.id, containerId });
    if (!isTerminal(session.status)) {
      this.#o.opening?.(session);
      await this.#o.resuming?.(session);
      await this.#o.ingest.open(this.#taskOf(session));
    }
    log.info({ status: session.status, deadlineAt: session.deadlineAt }, 'adopting a session after restart');
    this.#hold(session.tenant);
    const p = this.#o.monitor
      .watch(session, containerId, session.startedAt ?? Date.now())
      .catch((err: unknown) => log.error({ err }, 'adopted session failed'))
      .finally(() => {
        this.#o.ended?.(session.id);
        this.#release(session.tenant);
        this.#inflight.delete(p);
        this.notify();
      });
    this.#inflight.add(p);
  }

  async #failStart(session: SessionRecord, claim: ClaimRef, containerId: string | undefined, message: string): Promise<void> {
    const { runtime, ingest } = this.#o;
    if (containerId) await runtime.remove(containerId).catch(() => {});
    await ingest.close(session.id);
    const decision = await this.#lifecycle.decide(
      session.id,
      { status: 'failed', reason: 'runtime_error', message },
      { fallback: 'runtime_error', claimedBy: claim },
    );
    // this worker still holds the session: it stores FINISH whichever decision stands; one it
    // lost (settled, requeued, another worker's) is left to its holder
    const s = decision.session;
    if (decision.won || (s.workerId === this.workerId && isTerminal(s.status) && s.finishSeq === null)) {
      await this.#lifecycle.finish(session.id, decision.outcome);
    }
  }
}
