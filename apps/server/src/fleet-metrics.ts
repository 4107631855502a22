import type { Logger } from '@mgx/config';
import { WORKER_STATES, type Store } from '@mgx/event-store';
import type { Metrics } from '@mgx/metrics';

/**
 * Sets the fleet gauges from the workers the shared store lists: workers by state, and the
 * slots (capacity, in use) of those that hold a lease (alive or draining). Every process of a
 * fleet reports the same values; aggregate them with max(), not sum().
 */
export async function refreshFleetMetrics(store: Store, metrics: Metrics): Promise<void> {
  const workers = await store.workers.list();
  for (const state of WORKER_STATES) metrics.workers.set({ state }, workers.filter((w) => w.state === state).length);
  const leased = workers.filter((w) => w.state === 'alive' || w.state === 'draining');
  metrics.fleetCapacity.set(leased.reduce((n, w) => n + w.capacity, 0));
  metrics.fleetInUse.set(leased.reduce((n, w) => n + w.inUse, 0));
}

/** The refresher GET /metrics runs: a store that cannot answer leaves the gauges as they were, and is logged. */
export function fleetMetricsRefresher(store: Store, metrics: Metrics, logger: Logger): () => Promise<void> {
  return async () => {
    try {
      await refreshFleetMetrics(store, metrics);
    } catch (err) {
      logger.warn({ err }, 'cannot read the workers for the fleet metrics; they keep their last values');
    }
  };
}
