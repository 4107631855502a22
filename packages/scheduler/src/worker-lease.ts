import type { Logger } from '@mgx/config';
import { silentLogger } from '@mgx/config';
import type { HeartbeatResult, RegisterResult, WorkerInfo, WorkerStore } from '@mgx/event-store';

export interface WorkerLeaseOptions {
  workers: WorkerStore;
  info: WorkerInfo;
  /** MGX_WORKER_HEARTBEAT_SECONDS */
  heartbeatMs: number;
  /** MGX_WORKER_LEASE_SECONDS */
  leaseMs: number;
  /** Sessions this worker holds a slot for, reported with every heartbeat. */
  inUse: () => number;
  logger?: Logger;
  now?: () => number;
  /** Called after the lease was lost and taken again under a new epoch: claims may resume. */
  renewed?: () => void;
  /**
   * Called once, at the first heartbeat that carries an operator's drain request
   * (`WorkerStore.requestDrain`): the process drains, deregisters and exits.
   */
  drainRequested?: () => void;
}

/**
 * This worker's lease in the shared store. A worker claims only while it holds a valid lease:
 * registered (a new epoch) and renewed by a heartbeat within MGX_WORKER_LEASE_SECONDS.
 *
 * - `register` comes before reconcile. The record it replaces says what the last life of this
 *   worker left: still alive or draining (it restarted within its lease, or nobody declared
 *   it dead), so it adopts its sessions; dead, so they were settled and it resurrects nothing.
 * - A heartbeat the store refuses (declared dead, or a newer epoch registered under the same
 *   MGX_OWNER) stops claims at once; the worker registers again under a new epoch.
 * - A heartbeat that fails (store unreachable) keeps the lease only until it runs out locally.
 * - `drain` reports the state draining (the fleet sees it; this worker claims nothing more).
 * - A heartbeat may carry an operator's drain request: `drainRequested` hears it, once.
 * - `deregister` releases the lease (state stopped): only after a drain, when nothing is held.
 *   A plain stop keeps the lease: the next start within it adopts the running sessions.
 */
export class WorkerLease {
  readonly #o: Required<Omit<WorkerLeaseOptions, 'renewed' | 'drainRequested'>> & Pick<WorkerLeaseOptions, 'renewed' | 'drainRequested'>;
  #epoch: number | undefined;
  #state: 'alive' | 'draining' = 'alive';
  /** Until when this process may trust its lease without hearing from the store again. */
  #validUntil = 0;
  #lost = false;
  /** An operator's drain request was heard (and passed on once). */
  #drainHeard = false;
  #timer: NodeJS.Timeout | undefined;
  #beating: Promise<void> | undefined;
  #stopped = false;
  /** Heartbeats that failed in a row, and when the next may be tried (see #beat). */
  #failures = 0;
  #retryAt = 0;

  constructor(options: WorkerLeaseOptions) {
    this.#o = { logger: silentLogger, now: () => Date.now(), ...options };
  }

  get id(): string {
    return this.#o.info.id;
  }

  /** The epoch of the current registration (claims pass it); undefined before `register`. */
  get epoch(): number | undefined {
    return this.#epoch;
  }

  get state(): 'alive' | 'draining' {
    return this.#state;
  }

  /** True while this worker may claim: registered, not draining, lease not lost or run out. */
  canClaim(): boolean {
    return this.#epoch !== undefined && !this.#lost && !this.#stopped && this.#state === 'alive' && this.#o.now() < this.#validUntil;
  }

  /** Registers under a new epoch with a fresh lease; returns what the previous life left. */
  async register(): Promise<RegisterResult> {
    const now = this.#o.now();
    const res = await this.#o.workers.register(this.#o.info, this.#o.leaseMs, now);
    this.#epoch = res.worker.epoch;
    this.#validUntil = now + this.#o.leaseMs;
    this.#lost = false;
    const prev = res.previous;
    this.#o.logger.info(
      {
        workerId: this.id,
        epoch: this.#epoch,
        previous: prev ? { state: prev.state, epoch: prev.epoch, leaseUntil: prev.leaseUntil } : null,
      },
      'worker registered',
    );
    return res;
  }

  /** Heartbeats every MGX_WORKER_HEARTBEAT_SECONDS until `stop`. */
  start(): void {
    if (this.#timer || this.#stopped) return;
    this.#timer = setInterval(() => void this.beat(), this.#o.heartbeatMs);
    this.#timer.unref();
  }

  /** One heartbeat (the timer's; tests call it directly). Never throws. */
  beat(): Promise<void> {
    this.#beating ??= this.#beat().finally(() => (this.#beating = undefined));
    return this.#beating;
  }

  async #beat(): Promise<void> {
    if (this.#stopped || this.#epoch === undefined) return;
    const now = this.#o.now();
    // a store that fails (a file locked past its busy timeout blocks the event loop for that long
    // on every write) is asked again less often, but at least three times a lease
    if (now < this.#retryAt) return;
    const log = this.#o.logger;
    let res: HeartbeatResult;
    try {
      res = await this.#o.workers.heartbeat(this.id, this.#epoch, { inUse: this.#o.inUse(), state: this.#state }, this.#o.leaseMs, now);
      this.#failures = 0;
    } catch (err) {
      this.#failures++;
      const wait = Math.min(this.#o.heartbeatMs * 2 ** this.#failures, Math.max(this.#o.heartbeatMs, this.#o.leaseMs / 3));
      this.#retryAt = now + wait - this.#o.heartbeatMs;
      log.warn({ err, workerId: this.id, validUntil: this.#validUntil }, 'heartbeat failed; claims stop if the lease runs out');
      return;
    }
    if (res.kept) {
      this.#validUntil = now + this.#o.leaseMs;
      if (res.drainRequested && !this.#drainHeard) {
        this.#drainHeard = true;
        log.warn({ workerId: this.id, epoch: this.#epoch }, 'an operator asked this worker to drain');
        this.#o.drainRequested?.();
      }
      return;
    }
    // declared dead (or a newer epoch under the same MGX_OWNER): stop claiming at once
    this.#lost = true;
    const record = await this.#o.workers.get(this.id).catch(() => null);
    log.error(
      { workerId: this.id, epoch: this.#epoch, stored: record ? { state: record.state, epoch: record.epoch } : null },
      record && record.state !== 'dead' && record.epoch !== this.#epoch
        ? 'worker lease lost: another process registered under the same MGX_OWNER; claims stopped, registering again'
        : 'worker lease lost: this worker was declared dead and its sessions were settled; claims stopped, registering again',
    );
    if (this.#stopped) return;
    try {
      await this.register();
      this.#o.renewed?.();
    } catch (err) {
      log.error({ err, workerId: this.id }, 'registering again failed; the next heartbeat retries');
      // keep #lost: the next beat has an old epoch, is refused, and registers again
    }
  }

  /** Claims nothing more and says so in the store (state draining). */
  async drain(): Promise<void> {
    this.#state = 'draining';
    await this.beat();
  }

  /**
   * Stops heartbeats. With `deregister` (a drained worker, holding nothing) the lease is
   * released and the worker shows as stopped; without, the lease runs on in the store, so a
   * start within it adopts what this one leaves running, and after it the fleet settles them.
   */
  async stop(options: { deregister?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#beating;
    if (options.deregister && this.#epoch !== undefined && !this.#lost) {
      await this.#o.workers.deregister(this.id, this.#epoch);
      this.#o.logger.info({ workerId: this.id, epoch: this.#epoch }, 'worker deregistered');
    }
  }
}
