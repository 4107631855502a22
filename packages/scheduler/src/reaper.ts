import type { Logger } from '@mgx/config';
import { silentLogger } from '@mgx/config';
import type { Store, WorkerRecord } from '@mgx/event-store';
import type { Metrics } from '@mgx/metrics';
import { outcomeOfRecord, SessionLifecycle } from '@mgx/monitor';

export interface SettleDeps {
  store: Pick<Store, 'sessions'>;
  metrics: Metrics;
  /** MGX_WORKSPACES_SHARED: when true a dead worker's workspaces stay usable by the others. */
  workspacesShared: boolean;
  logger?: Logger;
}

export interface SettleCounts {
  requeued: number;
  lost: number;
  finished: number;
  workspaceUnavailable: number;
}

/** The message of a lost session's FINISH: it names the worker and when it was last heard from. */
export const lostMessage = (w: Pick<WorkerRecord, 'id' | 'heartbeatAt'>) =>
  `worker ${w.id} was lost (no heartbeat since ${new Date(w.heartbeatAt).toISOString()})`;

/**
 * Settles what a dead worker held, each session once through the store's compare-and-set
 * (SessionLifecycle): a claim that never got a container goes back to the queue; a session
 * with a container ends failed/lost with a FINISH naming the worker; a decided session whose
 * FINISH the worker did not store gets it; a queued session on a workspace the worker holds
 * ends failed/workspace_unavailable (unless workspaces are shared).
 *
 * Called by the process that won `markDead`, and by the worker itself when it registers again
 * and finds it was declared dead (a winner that died mid-way leaves the rest to it). Both are
 * safe together: every step is a compare-and-set. The containers stay on the dead worker's
 * engine, which other hosts cannot reach: its next start removes them (their sessions are
 * terminal, so its reconcile adopts nothing).
 */
export async function settleWorker(deps: SettleDeps, worker: WorkerRecord): Promise<SettleCounts> {
  const { store } = deps;
  const log = (deps.logger ?? silentLogger).child({ workerId: worker.id });
  const lifecycle = new SessionLifecycle({ store, metrics: deps.metrics });
  const counts: SettleCounts = { requeued: 0, lost: 0, finished: 0, workspaceUnavailable: 0 };
  const message = lostMessage(worker);
  const settled = new Set<string>();

  for (const s of await store.sessions.findByStatus(['starting', 'running'], worker.id)) {
    settled.add(s.id);
    if (s.status === 'starting' && s.containerId === null) {
      // read again: requeue is a compare-and-set on the status and the worker, not the container
      const now = await store.sessions.getSession(s.id);
      if (now?.status === 'starting' && now.containerId === null && now.workerId === worker.id) {
        if ((await store.sessions.requeue(s.id, { workerId: worker.id })) === 'done') {
          counts.requeued++;
          log.info({ sessionId: s.id }, 'a claim of a lost worker went back to the queue');
        }
        continue;
      }
      if (!now || now.workerId !== worker.id) continue;
    }
    const res = await lifecycle.end(
      s.id,
      { status: 'failed', reason: 'lost', message },
      { from: ['starting', 'running'], ifLost: 'leave', fallback: 'lost' },
    );
    if (res.won) {
      counts.lost++;
      log.warn({ sessionId: s.id, status: s.status }, 'session of a lost worker ended failed/lost');
    }
  }

  // decided (by its monitor, a deadline, a cancel) but FINISH never stored: the worker died in teardown
  for (const s of await store.sessions.findUnfinished()) {
    if (s.workerId !== worker.id || settled.has(s.id)) continue;
    await lifecycle.finish(s.id, outcomeOfRecord(s, 'lost'));
    counts.finished++;
  }

  counts.workspaceUnavailable = await endQueuedOnWorkspaces(deps, worker, lifecycle);
  if (Object.values(counts).some((n) => n > 0)) log.warn(counts, 'settled the sessions of a lost worker');
  return counts;
}

/**
 * Ends failed/workspace_unavailable each queued session on a workspace the dead worker holds
 * (none when workspaces are shared): only that worker could claim them. `stillDead`, asked
 * once when there are some, lets a caller with an older view of the worker check it again.
 * Returns how many it ended.
 */
async function endQueuedOnWorkspaces(
  deps: SettleDeps,
  worker: WorkerRecord,
  lifecycle: SessionLifecycle,
  stillDead: () => Promise<boolean> = async () => true,
): Promise<number> {
  if (deps.workspacesShared) return 0;
  const queued = await deps.store.sessions.findQueuedOnWorkspacesOf(worker.id);
  if (queued.length === 0 || !(await stillDead())) return 0;
  let ended = 0;
  for (const q of queued) {
    const res = await lifecycle.end(
      q.id,
      {
        status: 'failed',
        reason: 'workspace_unavailable',
        message: `workspace ${q.workspaceId} is held by worker ${worker.id}, which was lost (no heartbeat since ${new Date(worker.heartbeatAt).toISOString()})`,
      },
      { from: ['queued'], ifLost: 'leave', fallback: 'workspace_unavailable' },
    );
    if (res.won) ended++;
  }
  return ended;
}

export interface ReaperOptions extends SettleDeps {
  store: Pick<Store, 'sessions' | 'workers'>;
  /** How often to look (MGX_WORKER_HEARTBEAT_SECONDS). */
  intervalMs: number;
  /** Every how many looks the workers already dead are settled again (see resettle). */
  resettleEvery?: number;
  now?: () => number;
}

/**
 * Runs in every process (API nodes too): every interval it lists the workers and declares
 * dead each alive or draining one whose lease has run out. `markDead` is a compare-and-set,
 * so one process wins per death, and only the winner settles the worker's sessions.
 *
 * Clocks: a lease is compared with this process's clock, so hosts' clocks must agree to well
 * within MGX_WORKER_LEASE_SECONDS (NTP does).
 */
export class Reaper {
  readonly #o: ReaperOptions & { logger: Logger; now: () => number; resettleEvery: number };
  #timer: NodeJS.Timeout | undefined;
  #sweeping: Promise<unknown> | undefined;
  #looks = 0;
  readonly #lifecycle: SessionLifecycle;

  constructor(options: ReaperOptions) {
    this.#o = { logger: silentLogger, now: () => Date.now(), resettleEvery: 6, ...options };
    this.#lifecycle = new SessionLifecycle({ store: options.store, metrics: options.metrics });
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => {
      this.#sweeping ??= this.#look()
        .catch((err: unknown) => this.#o.logger.error({ err }, 'looking for lost workers failed'))
        .finally(() => (this.#sweeping = undefined));
    }, this.#o.intervalMs);
    this.#timer.unref();
  }

  async #look(): Promise<void> {
    await this.sweep();
    if (++this.#looks % this.#o.resettleEvery === 0) await this.resettle();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#sweeping;
  }

  /**
   * One look: the workers this call declared dead, with what it settled of each. Sessions
   * queued later on the workspace of a worker already dead are ended here too (not reported):
   * settling happened once, at the death, and they would otherwise wait for that worker.
   */
  async sweep(): Promise<{ worker: WorkerRecord; settled: SettleCounts }[]> {
    const now = this.#o.now();
    const out: { worker: WorkerRecord; settled: SettleCounts }[] = [];
    for (const w of await this.#o.store.workers.list()) {
      if (w.state === 'dead') {
        await this.#queuedOnDead(w);
        continue;
      }
      if ((w.state !== 'alive' && w.state !== 'draining') || w.leaseUntil >= now) continue;
      if (!(await this.#o.store.workers.markDead(w.id, now))) continue;
      this.#o.logger.warn(
        { workerId: w.id, hostname: w.hostname, engine: w.engine, heartbeatAt: new Date(w.heartbeatAt).toISOString(), inUse: w.inUse },
        `worker ${w.id} was lost: its lease ran out; settling its sessions`,
      );
      const dead: WorkerRecord = { ...w, state: 'dead' };
      out.push({ worker: dead, settled: await settleWorker(this.#o, dead) });
    }
    return out;
  }

  /**
   * Settles every worker already dead again: a settlement cut short (the process that declared
   * the death stopped, the store failed mid-way) completes, and a session queued after the death
   * on a workspace the dead worker holds ends instead of waiting for ever. Every step is a
   * compare-and-set, so when nothing is left this stores nothing. The totals over all of them.
   */
  async resettle(): Promise<SettleCounts> {
    const total: SettleCounts = { requeued: 0, lost: 0, finished: 0, workspaceUnavailable: 0 };
    for (const w of await this.#o.store.workers.list()) {
      if (w.state !== 'dead' || !(await this.#stillDead(w))) continue;
      const counts = await settleWorker(this.#o, w);
      for (const k of Object.keys(total) as (keyof SettleCounts)[]) total[k] += counts[k];
    }
    return total;
  }

  /**
   * Whether `w`, listed dead, still is, under the same epoch: a worker that registered again
   * since the list settles and claims for itself.
   */
  async #stillDead(w: WorkerRecord): Promise<boolean> {
    const current = await this.#o.store.workers.get(w.id);
    return current?.state === 'dead' && current.epoch === w.epoch;
  }

  /** Sessions queued on a dead worker's workspaces since it was settled. */
  async #queuedOnDead(w: WorkerRecord): Promise<void> {
    if (this.#o.workspacesShared) return;
    const ended = await endQueuedOnWorkspaces(this.#o, w, this.#lifecycle, () => this.#stillDead(w));
    if (ended > 0) {
      this.#o.logger.warn(
        { workerId: w.id, workspaceUnavailable: ended },
        `sessions queued on the workspaces of dead worker ${w.id} ended workspace_unavailable`,
      );
    }
  }
}
