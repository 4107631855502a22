import { describe, expect, it } from 'vitest';
import type { WorkerView } from '@mgx/client';
import { age, formatWorkers } from '../src/workers.js';

const worker = (over: Partial<WorkerView> = {}): WorkerView => ({
  id: 'host-a',
  hostname: 'a.example',
  state: 'alive',
  drainRequested: false,
  leaseExpired: false,
  capacity: 4,
  inUse: 1,
  lastHeartbeat: 100_000,
  leaseUntil: 130_000,
  engine: 'podman 4.3.1',
  version: '1.0.0',
  startedAt: 0,
  ...over,
});

describe('age', () => {
  it.each([
    [0, '0s'],
    [4_400, '4s'],
    [59_000, '59s'],
    [60_000, '1m'],
    [3_599_000, '59m'],
    [7_200_000, '2h'],
    [3 * 86_400_000, '3d'],
    [-5_000, '0s'],
  ])('%i ms ago is %s', (ms, want) => {
    expect(age(1_000_000_000 - ms, 1_000_000_000)).toBe(want);
  });
});

describe('formatWorkers', () => {
  it('prints a header and one aligned row per worker: id, state (and a drain not yet heard), in use/capacity, heartbeat age, engine', () => {
    const lines = formatWorkers(
      [
        worker(),
        worker({ id: 'host-bb', state: 'dead', inUse: 0, capacity: 8, lastHeartbeat: 10_000, engine: 'docker 27.1' }),
        worker({ id: 'c', leaseExpired: true, inUse: 2, lastHeartbeat: 40_000 }),
        worker({ id: 'd', drainRequested: true }),
        worker({ id: 'e', state: 'draining', drainRequested: true }),
      ],
      104_000,
    );
    expect(lines).toEqual([
      'ID       STATE                    IN USE  HEARTBEAT  ENGINE',
      'host-a   alive                    1/4     4s ago     podman 4.3.1',
      'host-bb  dead                     0/8     1m ago     docker 27.1',
      'c        alive (lease expired)    2/4     1m ago     podman 4.3.1',
      'd        alive (drain requested)  1/4     4s ago     podman 4.3.1',
      'e        draining                 1/4     4s ago     podman 4.3.1',
    ]);
  });
});
