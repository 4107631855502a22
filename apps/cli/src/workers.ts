import type { WorkerView } from '@mgx/client';

/** How long ago `at` was, in the largest whole unit: 4s, 12m, 3h, 2d. */
export function age(at: number, now: number): string {
  const s = Math.max(0, Math.round((now - at) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

/**
 * The state as the store has it, flagged when the lease ran out and nobody declared the worker
 * dead yet, or when an operator asked it to drain and it has not heard yet.
 */
const stateOf = (w: WorkerView) =>
  w.leaseExpired ? `${w.state} (lease expired)` : w.drainRequested && w.state === 'alive' ? `${w.state} (drain requested)` : w.state;

/** The workers as a table: id, state, in use/capacity, last heartbeat age, engine. */
export function formatWorkers(workers: WorkerView[], now: number): string[] {
  const header = ['ID', 'STATE', 'IN USE', 'HEARTBEAT', 'ENGINE'];
  const rows = [
    header,
    ...workers.map((w) => [w.id, stateOf(w), `${w.inUse}/${w.capacity}`, `${age(w.lastHeartbeat, now)} ago`, w.engine]),
  ];
  const widths = header.map((_, i) => Math.max(...rows.map((r) => r[i]?.length ?? 0)));
  // the last column is not padded: no trailing spaces
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '));
}
