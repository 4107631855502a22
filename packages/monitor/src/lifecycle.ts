import type { SessionUsage, TerminalReason } from '@mgx/agent-sdk';
import type { DecideOptions, Outcome, SessionRecord, Store } from '@mgx/event-store';
import type { Metrics } from '@mgx/metrics';
import { finishDataOf, outcomeOfRecord } from './outcomes.js';

export interface LifecycleDeps {
  store: Pick<Store, 'sessions'>;
  metrics: Metrics;
}

/** The result of the one terminal decision of a session. */
export interface Decision {
  /** True for the one call that moved the session to its terminal state. */
  won: boolean;
  /** The outcome that stands: this call's when it won, otherwise the one the store holds. */
  outcome: Outcome;
  session: SessionRecord;
}

export interface DecideStep extends DecideOptions {
  /** Reason to report when the stored row lost its own (it never should). */
  fallback?: TerminalReason;
}

export interface FinishStep {
  /** The runner's id of its FINISH frame, acknowledged once FINISH is stored. */
  rid?: number | undefined;
  /** When the agent reported its FINISH, kept in the stored FINISH. */
  reportedAt?: number | undefined;
  /** What the session's container used, stored in FINISH and on the session. */
  usage?: SessionUsage | undefined;
  /**
   * Runs after the end is counted and before FINISH is stored: the monitor closes the
   * session's ingest here, so nothing the runner sends late can land after FINISH.
   */
  beforeFinish?: (() => Promise<void>) | undefined;
  /** Usage from elsewhere (model tokens), read after `beforeFinish` and added to `usage`. */
  moreUsage?: (() => Partial<SessionUsage> | undefined) | undefined;
}

export interface EndStep extends DecideStep, FinishStep {
  /**
   * What to do when another decision came first. `finish`: this caller holds the session
   * (a worker whose start failed) and stores FINISH with the outcome that stands. `leave`:
   * whoever holds the session finishes it (the API cancelling a session that has left the queue).
   */
  ifLost: 'finish' | 'leave';
}

/**
 * The one owner of a session's end. A session ends in two steps: `decide`, the
 * compare-and-set that picks its one terminal state (the first trigger wins), and `finish`,
 * which counts the end and stores FINISH, always its last event. The monitor decides when a
 * trigger fires and finishes after teardown; callers with nothing to tear down use `end`.
 *
 * Every FINISH is counted once, by whoever stores it, and before it is stored, so a client
 * that saw FINISH finds it in the metrics.
 */
export class SessionLifecycle {
  readonly #deps: LifecycleDeps;

  constructor(deps: LifecycleDeps) {
    this.#deps = deps;
  }

  async decide(sessionId: string, outcome: Outcome, step: DecideStep = {}): Promise<Decision> {
    const { fallback = 'lost', ...options } = step;
    const res = await this.#deps.store.sessions.decide(sessionId, outcome, options);
    return { won: res.won, outcome: res.won ? outcome : outcomeOfRecord(res.session, fallback), session: res.session };
  }

  async finish(sessionId: string, outcome: Outcome, step: FinishStep = {}): Promise<void> {
    this.#count(outcome);
    await step.beforeFinish?.();
    const reported = step.reportedAt !== undefined ? { reportedAt: step.reportedAt } : {};
    const more = step.moreUsage?.();
    const usage = step.usage !== undefined ? { usage: { ...step.usage, ...more } } : {};
    await this.#deps.store.sessions.appendFinish(sessionId, { ...finishDataOf(outcome), ...reported, ...usage }, step.rid);
  }

  /** Both steps, for an end with no container to tear down. */
  async end(sessionId: string, outcome: Outcome, step: EndStep): Promise<Decision> {
    const { ifLost, rid, reportedAt, beforeFinish, usage, moreUsage, ...decide } = step;
    const decision = await this.decide(sessionId, outcome, decide);
    if (decision.won || ifLost === 'finish')
      await this.finish(sessionId, decision.outcome, { rid, reportedAt, beforeFinish, usage, moreUsage });
    return decision;
  }

  #count(outcome: Outcome): void {
    const { metrics } = this.#deps;
    if (outcome.reason === 'oom_killed') metrics.oomKills.inc();
    if (outcome.status === 'timed_out') metrics.sessionTimeouts.inc();
    metrics.sessions.inc({ status: outcome.status });
    metrics.sessionReasons.inc({ reason: outcome.reason });
    if (outcome.reason === 'lost') metrics.sessionsLost.inc();
  }
}
