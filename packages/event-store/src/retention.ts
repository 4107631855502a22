import type { Logger } from '@mgx/config';
import { StoreError, StoreErrorCode } from './errors.js';

const DAY_MS = 24 * 3600 * 1000;
const PURGE_FIRST_RUN_MS = 60 * 1000;
const PURGE_INTERVAL_MS = 3600 * 1000;
/** Sessions removed per step, so a large purge never holds the store for long. */
const PURGE_BATCH = 500;

/** What one purge step found expired (at most the batch size) and how many sessions it removed. */
export interface PurgeStep {
  found: number;
  removed: number;
}

/**
 * A store's retention (MGX_EVENT_RETENTION_DAYS): terminal sessions and their events are removed
 * this many days after they ended; 0 keeps them forever. It owns the purge timer and the loop of
 * batches; the adapter supplies one batch's removal.
 */
export class Retention {
  /** The retention in ms; 0 when sessions are kept forever. */
  readonly ms: number;
  #timers: NodeJS.Timeout[] = [];

  /** `where` names the store in the error about a bad value. */
  constructor(days: number, where: string) {
    if (!Number.isInteger(days) || days < 0) {
      throw new StoreError(StoreErrorCode.UNAVAILABLE, `${where}: retentionDays must be a whole number >= 0`);
    }
    this.ms = days * DAY_MS;
  }

  /**
   * Removes what expired before `now` minus the retention, `removeBatch` at a time (it removes
   * up to `limit` terminal sessions that ended before `cutoff`, with their events), until a batch
   * finds fewer than the limit. Returns how many sessions were removed; 0 when nothing expires.
   */
  async purge(now: number, removeBatch: (cutoff: number, limit: number) => Promise<PurgeStep>): Promise<number> {
    if (this.ms <= 0) return 0;
    const cutoff = now - this.ms;
    let removed = 0;
    for (;;) {
      const step = await removeBatch(cutoff, PURGE_BATCH);
      removed += step.removed;
      if (step.found < PURGE_BATCH) return removed;
    }
  }

  /**
   * Runs `purge` soon after start (a server restarted often still purges), then hourly; the
   * timers never keep the process alive. A failed run is logged and the next one retries.
   * Nothing runs when sessions are kept forever.
   */
  start(purge: () => Promise<number>, logger: Logger): void {
    if (this.ms <= 0) return;
    const run = () => {
      purge().catch((err: unknown) => logger.warn({ err }, 'event store: retention purge failed; the next run retries'));
    };
    const first = setTimeout(run, PURGE_FIRST_RUN_MS);
    const every = setInterval(run, PURGE_INTERVAL_MS);
    first.unref();
    every.unref();
    this.#timers.push(first, every);
  }

  stop(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers = [];
  }
}
