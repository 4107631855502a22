import { isTerminal, type FinishData, type ResourceData, type SessionUsage } from '@mgx/agent-sdk';
import { silentLogger, type Logger } from '@mgx/config';
import type { NewEvent, Outcome, SessionRecord, Store } from '@mgx/event-store';
import type { IngestHub } from '@mgx/ingest';
import type { Metrics } from '@mgx/metrics';
import { exitOf, MISSING_EXIT, waitForExit, type ContainerRuntime, type ContainerStats, type ExitInfo } from '@mgx/runtime';
import { systemClock, type Clock } from './clock.js';
import { SessionLifecycle } from './lifecycle.js';
import { outcomeFromAgentFinish, outcomeFromExit } from './outcomes.js';
import { MEMORY_WARN_RATIO, UsageMeter } from './usage.js';

export type Trigger = 'finish' | 'exit' | 'deadline' | 'cancel' | 'lost' | 'budget' | 'external';

export interface MonitorOptions {
  store: Store;
  runtime: ContainerRuntime;
  ingest: Pick<IngestHub, 'drained' | 'close'>;
  metrics: Metrics;
  logger?: Logger;
  stopGraceMs: number;
  finishGraceMs: number;
  pollMs: number;
  logCaptureBytes: number;
  /** How long to wait for a runner's last events after its container exited. */
  drainMs?: number;
  clock?: Clock;
  /**
   * The worker id sessions are claimed under: when set, cancels that other processes store for
   * its sessions are acted on as the store reports them (SessionStore.watchCancels), not only
   * at the next fallback poll.
   */
  workerId?: string;
  /** What a session used (model tokens, …), read when its FINISH is stored, after its socket closed. */
  usage?: (sessionId: string) => Partial<SessionUsage> | undefined;
  /**
   * How often each running container's CPU, memory and pids are read from the engine
   * (MGX_USAGE_INTERVAL_SECONDS); 0 or absent: read once, at the end, for FINISH's usage.
   */
  usageIntervalMs?: number;
  /** The CPU period sessions' quotas are per (microseconds); default 100000. */
  cpuPeriod?: number;
  /** The label a tenant's usage is counted under (a bounded set); default `other` for all. */
  tenantLabel?: (tenant: string) => string;
}

interface Watch {
  session: SessionRecord;
  containerId: string;
  startedAt: number;
  log: Logger;
  /** Set when this process knows the terminal decision (its own or one found in the store). */
  decided: boolean;
  outcome: Outcome | undefined;
  decidedBy: Trigger | undefined;
  decidedAt: number;
  finishRid: number | undefined;
  finishReportedAt: number | undefined;
  killedByUs: boolean;
  /** Last time the agent was heard from (idle timeout). */
  lastActivity: number;
  exit: ExitInfo | undefined;
  exitPromise: Promise<ExitInfo>;
  /** Settles `exitPromise` with an exit this monitor saw itself (see #expectExit). */
  confirmExit: (exit: ExitInfo) => void;
  /** Set once #expectExit has started asking. */
  expecting: boolean;
  /** The current round of #expectExit's probes (a new round ends the one before). */
  probes: number;
  timers: unknown[];
  /** The container's readings; FINISH's usage comes from it. */
  meter: UsageMeter;
  /** When this monitor learnt of the exit (the end of the session's wall time). */
  exitedAt: number | undefined;
  /** What this session adds to the memory gauges now (taken back at its end). */
  gauged: { memoryBytes: number; limitBytes: number; nearLimit: boolean };
  /** The reading that completes the totals, once asked (see #lastReading). */
  lastReading: Promise<void> | undefined;
  tornDown: Promise<void>;
  resolveTornDown: () => void;
}

/** #expectExit's schedule: this many inspects PROBE_MS apart, then backing off. */
const DENSE_PROBES = 25;
const PROBE_MS = 4;

/**
 * Watches each running session to its one terminal state. Whatever comes first decides:
 * the agent's FINISH (from ingest), the container's exit (engine wait), the deadline timer,
 * or a cancel. The decision is a compare-and-set in the store, so a second trigger, here or
 * in another process, changes nothing. The fallback poll (AGENT_MONITOR_POLL_SECONDS) only
 * catches what the live paths could miss: an engine restart, a cancel written by another
 * process, a container removed behind our back.
 *
 * After the decision it tears down in a fixed order: stop (SIGTERM, then SIGKILL), wait for
 * the exit (the engine's `die` event, see DockerRuntime.wait), store the runner's last events,
 * CONTAINER_EXITED and the container's logs (read while it still exists), close the session's
 * ingest, then FINISH. FINISH is therefore always the last event. The container is removed
 * after FINISH, off the client's path: shortly after it, and if this process dies first, by
 * the next start's reconcile (which removes every container of a finished session).
 */
export class Monitor {
  readonly #o: Required<Omit<MonitorOptions, 'logger' | 'clock' | 'workerId' | 'usage'>> &
    Pick<MonitorOptions, 'usage'> & { logger: Logger; clock: Clock; workerId?: string };
  readonly #watches = new Map<string, Watch>();
  readonly #lifecycle: SessionLifecycle;
  #stopCancelWatch: (() => void) | undefined;
  /** The next round of stats readings, while sessions are watched and sampling is on. */
  #sampling: unknown;
  /** The next round of the fallback poll, while sessions are watched. */
  #polling: unknown;
  /** Removals of finished sessions' containers still in flight. */
  readonly #removals = new Set<Promise<void>>();

  constructor(options: MonitorOptions) {
    this.#o = {
      drainMs: 2000,
      logger: silentLogger,
      clock: systemClock,
      usageIntervalMs: 0,
      cpuPeriod: 100_000,
      tenantLabel: () => 'other',
      ...options,
    };
    this.#lifecycle = new SessionLifecycle({ store: options.store, metrics: options.metrics });
  }

  get active(): number {
    return this.#watches.size;
  }

  isWatching(sessionId: string): boolean {
    return this.#watches.has(sessionId);
  }

  /**
   * Watches a session whose container has started. Resolves when the session is terminal and
   * its FINISH stored; its container's removal follows (see `removals`).
   */
  watch(session: SessionRecord, containerId: string, startedAt: number): Promise<void> {
    const existing = this.#watches.get(session.id);
    if (existing) return existing.tornDown;
    this.#watchCancels();
    const { promise: tornDown, resolve: resolveTornDown } = deferred();
    const w: Watch = {
      session,
      containerId,
      startedAt,
      log: this.#o.logger.child({ sessionId: session.id, containerId }),
      decided: false,
      outcome: undefined,
      decidedBy: undefined,
      decidedAt: 0,
      finishRid: undefined,
      finishReportedAt: undefined,
      killedByUs: false,
      lastActivity: this.#o.clock.now(),
      exit: undefined,
      exitPromise: Promise.resolve(MISSING_EXIT),
      confirmExit: () => undefined,
      expecting: false,
      probes: 0,
      timers: [],
      meter: new UsageMeter({
        startedAt,
        memoryLimitBytes: session.limits.memoryBytes,
        cpuQuota: session.limits.cpuQuota,
        cpuPeriod: this.#o.cpuPeriod,
      }),
      exitedAt: undefined,
      gauged: { memoryBytes: 0, limitBytes: 0, nearLimit: false },
      lastReading: undefined,
      tornDown,
      resolveTornDown,
    };
    this.#watches.set(session.id, w);
    this.#o.metrics.containersRunning.inc();

    w.exitPromise = this.#waitExit(w);
    void w.exitPromise.then((exit) => this.#onExit(w, exit));

    const { clock } = this.#o;
    const deadlineAt = session.deadlineAt ?? startedAt + session.limits.timeoutMs;
    w.timers.push(
      clock.setTimeout(
        () => {
          void this.#decide(
            w,
            {
              status: 'timed_out',
              reason: 'timeout',
              message: `the session passed its deadline of ${Math.round(session.limits.timeoutMs / 1000)} s`,
            },
            'deadline',
            [{ type: 'TIMEOUT', data: { timeoutMs: session.limits.timeoutMs, deadlineAt } }],
          );
        },
        Math.max(0, deadlineAt - clock.now()),
      ),
    );
    if (session.limits.idleTimeoutMs) this.#scheduleIdle(w, session.limits.idleTimeoutMs);
    this.#schedulePoll();
    this.#scheduleSampling();
    if (isTerminal(session.status)) {
      // decided before this process took over: adopt the stored outcome and tear down
      void this.#decide(w, { status: 'failed', reason: 'lost' }, 'external');
    } else if (session.cancelRequested) {
      this.cancel(session.id);
    }
    return tornDown;
  }

  /** The agent's FINISH, from ingest. Resolves once the outcome is durable. */
  async agentFinished(sessionId: string, rid: number, data: FinishData & Record<string, unknown>, reportedAt?: number): Promise<void> {
    const started = performance.now();
    const outcome = outcomeFromAgentFinish(data);
    const w = this.#watches.get(sessionId);
    if (!w) {
      // not watched here (yet): make the outcome durable; whoever adopts the session tears down
      const res = await this.#lifecycle.decide(sessionId, outcome);
      if (!res.won) this.#o.logger.info({ sessionId, status: data.status }, 'agent FINISH arrived after the session was decided; ignored');
      return;
    }
    if (w.decided) {
      w.log.info({ status: data.status, decided: w.outcome?.status }, 'agent FINISH lost the race; ignored');
      await this.#o.store.events.append(sessionId, [
        {
          type: 'LOG',
          data: {
            stream: 'agent',
            level: 'warn',
            source: 'platform',
            text: `the agent reported FINISH ${String(data.status)} after the session ended ${w.outcome?.status ?? ''}; ignored`,
          },
        },
      ]);
      return;
    }
    w.finishRid = rid;
    w.finishReportedAt = reportedAt;
    // asked before the decision, and awaited before the runner is acknowledged: once it is, the
    // runner exits and the container's CPU total with it (an engine asked after the exit answers
    // nothing). The decision does not wait (whoever came first still wins); the ack waits a
    // second at most for a slow engine.
    w.lastReading ??= this.#lastReading(w);
    await this.#decide(w, outcome, 'finish');
    await this.#within(w.lastReading, 1000, undefined);
    // the ack goes out as this returns, and the runner exits a few ms after it: look closely now
    if (w.decidedBy === 'finish') this.#expectExit(w, { now: true });
    this.#o.metrics.finishDetect.observe((performance.now() - started) / 1000);
  }

  /** The agent was heard from (events arrived): pushes the idle deadline back. */
  activity(sessionId: string): void {
    const w = this.#watches.get(sessionId);
    if (w) w.lastActivity = this.#o.clock.now();
  }

  /** One timer per session, re-armed for the time left rather than reset on every event. */
  #scheduleIdle(w: Watch, idleMs: number): void {
    const { clock } = this.#o;
    const due = Math.max(0, w.lastActivity + idleMs - clock.now());
    w.timers.push(
      clock.setTimeout(() => {
        if (w.decided) return;
        if (clock.now() - w.lastActivity < idleMs) return this.#scheduleIdle(w, idleMs);
        void this.#decide(
          w,
          { status: 'timed_out', reason: 'timeout', message: `the agent emitted nothing for ${Math.round(idleMs / 1000)} s` },
          'deadline',
          [{ type: 'TIMEOUT', data: { idle: true, idleTimeoutMs: idleMs } }],
        );
      }, due),
    );
  }

  /** Cancels a session watched here; false when it is not. */
  cancel(sessionId: string): boolean {
    const w = this.#watches.get(sessionId);
    if (!w) return false;
    void this.#decide(w, { status: 'cancelled', reason: 'cancelled', message: 'the session was cancelled' }, 'cancel', [
      { type: 'CANCELLED', data: { requestedAt: this.#o.clock.now() } },
    ]);
    return true;
  }

  /**
   * A session went past its model budget (the gateway refused a call): it ends `failed`,
   * `budget_exceeded`, like any other trigger. False when it is not watched here.
   */
  budgetExceeded(sessionId: string, message: string): boolean {
    const w = this.#watches.get(sessionId);
    if (!w) return false;
    void this.#decide(w, { status: 'failed', reason: 'budget_exceeded', message }, 'budget');
    return true;
  }

  /** From the first watched session on: cancels stored by other processes, as the store reports them. */
  #watchCancels(): void {
    const { workerId, store } = this.#o;
    if (workerId === undefined || this.#stopCancelWatch) return;
    this.#stopCancelWatch = store.sessions.watchCancels(workerId, (id) => {
      const w = this.#watches.get(id);
      if (!w || w.decided) return;
      w.log.info({}, 'cancel requested through another process');
      this.cancel(id);
    });
  }

  /** Resolves when every watched session is torn down and its container removed. */
  async idle(): Promise<void> {
    await Promise.all([...this.#watches.values()].map((w) => w.tornDown));
    await this.removals();
  }

  /** Resolves once the removals of finished sessions' containers in flight have ended. */
  async removals(): Promise<void> {
    while (this.#removals.size > 0) await Promise.allSettled([...this.#removals]);
  }

  /** Stops watching without deciding (graceful shutdown: the next start adopts the sessions). */
  detachAll(): void {
    this.#stopCancelWatch?.();
    this.#stopCancelWatch = undefined;
    if (this.#sampling !== undefined) this.#o.clock.clearTimeout(this.#sampling);
    this.#sampling = undefined;
    if (this.#polling !== undefined) this.#o.clock.clearTimeout(this.#polling);
    this.#polling = undefined;
    for (const w of this.#watches.values()) {
      for (const t of w.timers) this.#o.clock.clearTimeout(t);
      w.timers = [];
      this.#gauge(w, undefined);
      w.resolveTornDown();
    }
    this.#watches.clear();
  }

  async #decide(w: Watch, outcome: Outcome, trigger: Trigger, events: NewEvent[] = []): Promise<void> {
    if (w.decided) {
      w.log.debug({ trigger, status: outcome.status, decided: w.outcome?.status }, 'trigger lost the race; ignored');
      return;
    }
    w.decided = true;
    let decision;
    try {
      decision = await this.#lifecycle.decide(w.session.id, outcome, { events, at: this.#o.clock.now() });
    } catch (err) {
      // not decided after all: the next trigger or poll tries again
      w.decided = false;
      w.log.error({ trigger, err }, 'storing the terminal decision failed');
      return;
    }
    w.outcome = decision.outcome;
    w.decidedBy = decision.won ? trigger : 'external';
    w.decidedAt = this.#o.clock.now();
    w.log.info({ trigger: w.decidedBy, status: decision.outcome.status, reason: decision.outcome.reason }, 'session decided');
    void this.#teardown(w, decision.outcome);
  }

  /**
   * Resolves once the container has exited: the engine's `die` event or wait, or #expectExit,
   * whichever is first; the fallback poll (#poll) reports an exit to #onExit itself.
   */
  #waitExit(w: Watch): Promise<ExitInfo> {
    const { clock } = this.#o;
    const ac = new AbortController();
    const waited = waitForExit(this.#o.runtime, w.containerId, {
      // the fallback poll (#poll) inspects the container already
      pollMs: 0,
      pause: (ms) => new Promise<void>((r) => clock.setTimeout(r, ms)),
      onRetry: (err) => w.log.warn({ err }, 'waiting for the container failed; retrying'),
      signal: ac.signal,
    });
    // called off below once the exit is known another way
    waited.catch(() => undefined);
    const confirmed = new Promise<ExitInfo>((resolve) => (w.confirmExit = resolve));
    return Promise.race([waited, confirmed]).finally(() => ac.abort(new Error('the exit is known')));
  }

  /**
   * The container is about to exit (its FINISH was acknowledged, or it is being stopped): ask
   * the engine in quick succession, every 4 ms for the first 100 ms, then 8 ms to 640 ms apart
   * (at most 33 inspects). Podman 4 notices an exit, and emits its `die`, only when something
   * reads the container's state; left alone that is its wait's 250 ms poll or its cleanup
   * process, ~300 ms later. `now`: the exit is due within milliseconds (the runner was just
   * acknowledged): a new round starts at once, replacing one under way.
   */
  #expectExit(w: Watch, options: { now?: boolean } = {}): void {
    if (w.exit !== undefined || (w.expecting && !options.now)) return;
    w.expecting = true;
    const round = ++w.probes;
    const { clock, runtime } = this.#o;
    let n = 0;
    const probe = async () => {
      if (w.exit !== undefined || w.probes !== round) return;
      try {
        const s = await runtime.inspect(w.containerId);
        const exit = s && exitOf(s);
        if (exit) return w.confirmExit(exit);
      } catch {
        // the engine's wait and the poll are still there
      }
      n++;
      if (n > DENSE_PROBES + 7 || w.exit !== undefined || w.probes !== round) return;
      clock.setTimeout(() => void probe(), n < DENSE_PROBES ? PROBE_MS : PROBE_MS * 2 ** (n - DENSE_PROBES + 1));
    };
    clock.setTimeout(() => void probe(), options.now ? 1 : PROBE_MS);
  }

  async #onExit(w: Watch, exit: ExitInfo): Promise<void> {
    // both the exit wait and the fallback poll report an exit; count it once
    if (w.exit !== undefined) return;
    w.exit = exit;
    w.exitedAt = this.#o.clock.now();
    this.#o.metrics.containersRunning.dec();
    this.#o.metrics.containerRun.observe(Math.max(0, this.#o.clock.now() - w.startedAt) / 1000);
    if (w.decided) return;
    // its FINISH may still be in the socket: store what it sent before judging the exit
    await this.#o.ingest.drained(w.session.id, this.#o.drainMs);
    if (w.decided) return;
    if (exit === MISSING_EXIT) {
      await this.#decide(w, { status: 'failed', reason: 'lost', message: 'the container disappeared' }, 'lost');
      return;
    }
    await this.#decide(w, outcomeFromExit(exit, w.session.limits.memoryBytes > 0), 'exit');
  }

  /**
   * The fallback poll: one round for every watched session, AGENT_MONITOR_POLL_SECONDS after the
   * last one ended. The store is asked per session (a cancel, a decision made elsewhere); the
   * engine once for all of them (which are running), then only about those that are not.
   */
  #schedulePoll(): void {
    if (this.#polling !== undefined) return;
    this.#polling = this.#o.clock.setTimeout(() => {
      void this.#pollRound().finally(() => {
        this.#polling = undefined;
        if (this.#watches.size > 0) this.#schedulePoll();
      });
    }, this.#o.pollMs);
  }

  async #pollRound(): Promise<void> {
    const open = [...this.#watches.values()].filter((w) => !w.decided);
    for (const w of open) await this.#pollStore(w);
    const left = open.filter((w) => !w.decided && w.exit === undefined);
    if (left.length === 0) return;
    let running: Set<string> | undefined;
    try {
      running = await this.#o.runtime.running(left.map((w) => w.containerId));
    } catch (err) {
      // each is inspected instead
      this.#o.logger.debug({ err }, 'listing the running containers failed');
    }
    for (const w of left) if (!running?.has(w.containerId)) await this.#pollEngine(w);
  }

  async #pollStore(w: Watch): Promise<void> {
    try {
      const row = await this.#o.store.sessions.getSession(w.session.id);
      if (row && row.cancelRequested && !w.decided) this.cancel(w.session.id);
      if (row && isTerminal(row.status) && !w.decided) {
        // decided elsewhere: #decide loses the compare-and-set and adopts the stored outcome
        await this.#decide(w, { status: 'failed', reason: 'lost' }, 'external');
      }
    } catch (err) {
      w.log.warn({ err }, 'monitor poll failed');
    }
  }

  async #pollEngine(w: Watch): Promise<void> {
    if (w.decided || w.exit !== undefined) return;
    try {
      const state = await this.#o.runtime.inspect(w.containerId);
      if (!w.decided && w.exit === undefined) {
        if (state === null) await this.#onExit(w, MISSING_EXIT);
        else if (!state.running && state.exitCode !== null) await this.#onExit(w, { exitCode: state.exitCode, oomKilled: state.oomKilled });
      }
    } catch (err) {
      w.log.warn({ err }, 'monitor poll failed');
    }
  }

  /**
   * The next round of readings, MGX_USAGE_INTERVAL_SECONDS after the last one ended; one timer
   * for every session, so an engine that reads many containers at once is asked once a round.
   */
  #scheduleSampling(): void {
    const { usageIntervalMs, clock } = this.#o;
    if (usageIntervalMs <= 0 || this.#sampling !== undefined) return;
    this.#sampling = clock.setTimeout(() => {
      void this.#sampleRound().finally(() => {
        this.#sampling = undefined;
        if (this.#watches.size > 0) this.#scheduleSampling();
      });
    }, usageIntervalMs);
  }

  /** Reads every running session's container and records what each reading says. */
  async #sampleRound(): Promise<void> {
    const running = [...this.#watches.values()].filter((w) => !w.decided && w.exit === undefined);
    if (running.length === 0) return;
    const { runtime, metrics, logger } = this.#o;
    const t0 = performance.now();
    let readings: Map<string, ContainerStats>;
    try {
      readings = await runtime.statsMany(running.map((w) => w.containerId));
    } catch (err) {
      // a missed round only makes the totals coarser
      logger.debug({ err }, 'reading container stats failed');
      return;
    } finally {
      metrics.usageSample.observe((performance.now() - t0) / 1000);
    }
    metrics.usageReadings.inc(readings.size);
    await Promise.all(
      running.map(async (w) => {
        const stats = readings.get(w.containerId);
        if (stats) await this.#record(w, stats);
      }),
    );
  }

  /**
   * The last reading, at teardown while the container still runs: it only completes the totals
   * (the session is ending: nothing to store or warn about).
   */
  async #lastReading(w: Watch): Promise<void> {
    if (w.exit !== undefined) return;
    try {
      const stats = await this.#o.runtime.stats(w.containerId);
      if (stats) w.meter.add(stats);
    } catch (err) {
      w.log.debug({ err }, 'reading the container stats failed');
    }
  }

  /** One reading of a running session: RESOURCE when it changed materially, WARNING the first time a limit is near. */
  async #record(w: Watch, stats: ContainerStats): Promise<void> {
    const { metrics, store } = this.#o;
    const r = w.meter.add(stats);
    // decided, or no longer watched here (a hand-over): its end takes it out of the gauges
    if (w.decided || this.#watches.get(w.session.id) !== w) return;
    this.#gauge(w, r.current);
    const events: NewEvent[] = r.resource ? [{ type: 'RESOURCE', data: { ...r.resource } }] : [];
    for (const warning of r.warnings) {
      events.push({ type: 'WARNING', data: { ...warning } });
      metrics.resourceWarnings.inc({ kind: warning.kind });
      w.log.warn({ kind: warning.kind }, warning.message);
    }
    if (events.length === 0) return;
    try {
      await store.events.append(w.session.id, events);
    } catch (err) {
      w.log.warn({ err }, 'storing a resource sample failed');
    }
  }

  /** Moves the memory gauges from what the session added so far to `now` (nothing: its end). */
  #gauge(w: Watch, now: ResourceData | undefined): void {
    const { metrics } = this.#o;
    const next = {
      memoryBytes: now?.memoryBytes ?? 0,
      limitBytes: now?.memoryLimitBytes ?? 0,
      nearLimit: now !== undefined && now.memoryLimitBytes > 0 && now.memoryBytes >= MEMORY_WARN_RATIO * now.memoryLimitBytes,
    };
    const move = (gauge: Metrics['agentMemory'], by: number) => {
      if (by > 0) gauge.inc(by);
      else if (by < 0) gauge.dec(-by);
    };
    move(metrics.agentMemory, next.memoryBytes - w.gauged.memoryBytes);
    move(metrics.agentMemoryLimit, next.limitBytes - w.gauged.limitBytes);
    move(metrics.sessionsNearMemoryLimit, Number(next.nearLimit) - Number(w.gauged.nearLimit));
    w.gauged = next;
  }

  /** FINISH's usage, counted in the metrics (before FINISH is visible, as every end is). */
  #usage(w: Watch, outcome: Outcome): SessionUsage {
    const { metrics, clock, tenantLabel } = this.#o;
    const usage = w.meter.totals(w.exitedAt ?? clock.now(), outcome.reason === 'oom_killed');
    metrics.sessionCpuSeconds.observe(usage.cpuSeconds);
    metrics.sessionMemoryPeak.observe(usage.memoryPeakBytes);
    const tenant = tenantLabel(w.session.tenant);
    metrics.tenantCpuSeconds.inc({ tenant }, usage.cpuSeconds);
    metrics.tenantMemoryGiBSeconds.inc({ tenant }, usage.memoryGiBSeconds);
    return usage;
  }

  /** `p`, or `fallback` after `ms` on the monitor's clock; the timer never outlives the race. */
  #within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
    const { clock } = this.#o;
    let timer: unknown;
    return Promise.race([p, new Promise<T>((r) => (timer = clock.setTimeout(() => r(fallback), ms)))]).finally(() =>
      clock.clearTimeout(timer),
    );
  }

  async #teardown(w: Watch, outcome: Outcome): Promise<void> {
    const { runtime, store, ingest, metrics, clock } = this.#o;
    const id = w.session.id;
    for (const t of w.timers) clock.clearTimeout(t);
    w.timers = [];
    // the last reading while the container still runs (its CPU total), beside the exit wait and
    // the stop, so teardown takes no longer; after the agent's FINISH it was asked already
    const lastReading = (w.lastReading ??= this.#lastReading(w));
    try {
      if (w.exit === undefined && w.decidedBy === 'finish') {
        // the runner exits by itself right after its FINISH is acknowledged
        this.#expectExit(w);
        await this.#within(w.exitPromise, this.#o.finishGraceMs, MISSING_EXIT);
      }
      if (w.exit === undefined) {
        w.killedByUs = true;
        // the runner stops on SIGTERM: flushes what it has and exits
        w.expecting = false;
        this.#expectExit(w);
        try {
          // bounded: whatever the engine does, teardown goes on to FINISH; an exit seen here
          // first ends the wait (stop's SIGKILL timer then finds nothing left to kill)
          const stopped = runtime.stop(w.containerId, this.#o.stopGraceMs);
          stopped.catch(() => undefined);
          await this.#within(Promise.race([stopped, w.exitPromise]), this.#o.stopGraceMs + 15_000, undefined);
        } catch (err) {
          w.log.warn({ err }, 'stopping the container failed');
        }
      }
      const tExit0 = performance.now();
      const exit = await this.#within(w.exitPromise, this.#o.stopGraceMs + 30_000, MISSING_EXIT);
      const tDrain0 = performance.now();
      // after the agent's FINISH its events are stored already, in order: nothing to wait for
      // (closing ingest below still stores anything it sent after); otherwise its last words
      if (w.decidedBy !== 'finish') await ingest.drained(id, this.#o.drainMs);
      const tLogs0 = performance.now();

      const tail: NewEvent[] = [];
      if (exit !== MISSING_EXIT) {
        tail.push({
          type: 'CONTAINER_EXITED',
          data: { exitCode: exit.exitCode, oomKilled: outcome.reason === 'oom_killed', killedBy: w.killedByUs ? w.decidedBy : null },
        });
      }
      try {
        // the container is still there (removed after FINISH): its logs are complete
        const lines = exit === MISSING_EXIT ? [] : await runtime.logs(w.containerId, this.#o.logCaptureBytes);
        for (const l of lines)
          if (l.text.length > 0) tail.push({ type: 'LOG', data: { stream: l.stream, text: l.text, source: 'container' } });
      } catch (err) {
        w.log.warn({ err }, 'capturing container logs failed');
      }
      await store.events.append(id, tail);
      w.log.debug(
        {
          sinceDecidedMs: clock.now() - w.decidedAt,
          exitWaitMs: Math.round(tDrain0 - tExit0),
          drainMs: Math.round(tLogs0 - tDrain0),
          logsMs: Math.round(performance.now() - tLogs0),
        },
        'teardown phases',
      );
    } catch (err) {
      w.log.error({ err }, 'teardown step failed; finishing the session anyway');
    }

    // counted before FINISH is visible, so a client that saw FINISH sees the counts too
    const exitReason = outcome.reason === 'oom_killed' ? 'oom_killed' : w.killedByUs ? 'killed' : 'exited';
    metrics.containerExits.inc({ reason: exitReason });
    await lastReading;
    this.#gauge(w, undefined);
    const usage = this.#usage(w, outcome);
    try {
      await this.#lifecycle.finish(id, outcome, {
        usage,
        rid: w.finishRid,
        reportedAt: w.decidedBy === 'finish' ? w.finishReportedAt : undefined,
        // closed before FINISH: nothing the runner sends late can land after it
        beforeFinish: () => ingest.close(id),
        moreUsage: () => this.#o.usage?.(id),
      });
    } catch (err) {
      w.log.error({ err }, 'storing FINISH failed; recovery will complete it');
    }
    this.#remove(w);

    metrics.containerTeardown.observe(Math.max(0, clock.now() - w.decidedAt) / 1000);
    w.log.info({ status: outcome.status, reason: outcome.reason, exitCode: w.exit?.exitCode }, 'session finished');
    this.#watches.delete(id);
    w.resolveTornDown();
  }

  /**
   * Removes a finished session's container, off the client's path; `removals` (the server's
   * close) waits for it. If it fails, or this process ends first, reconcile removes it.
   */
  #remove(w: Watch): void {
    const removal = this.#o.runtime.remove(w.containerId).catch((err: unknown) => {
      w.log.error({ err }, 'removing the container failed; the next start (reconcile) removes it');
    });
    this.#removals.add(removal);
    void removal.finally(() => this.#removals.delete(removal));
  }
}

/** A promise with its resolver, as Promise.withResolvers (Node 22) gives. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
