import { describe, expect, it } from 'vitest';
import { MISSING_EXIT, RuntimeError, RuntimeErrorCode, waitForExit, type ContainerState, type ExitInfo } from '../src/index.js';

const state = (over: Partial<ContainerState>): ContainerState => ({
  id: 'c',
  running: true,
  exitCode: null,
  oomKilled: false,
  startedAt: null,
  finishedAt: null,
  labels: {},
  memoryBytes: 0,
  ...over,
});
const never = () => new Promise<never>(() => undefined);
const fast = { pollMs: 5, retryMs: 5 };

describe('waitForExit', () => {
  it("resolves with the engine's wait", async () => {
    const exit = await waitForExit({ wait: async () => ({ exitCode: 3, oomKilled: false }), inspect: async () => state({}) }, 'c', fast);
    expect(exit).toEqual({ exitCode: 3, oomKilled: false });
  });

  it('reports a container that is gone as MISSING_EXIT', async () => {
    const notFound = new RuntimeError(RuntimeErrorCode.CONTAINER_NOT_FOUND, 'gone', 'wait');
    const runtime = {
      wait: async (): Promise<ExitInfo> => {
        throw notFound;
      },
      inspect: async () => state({}),
    };
    expect(await waitForExit(runtime, 'c', fast)).toBe(MISSING_EXIT);
    expect(await waitForExit({ wait: never, inspect: async () => null }, 'c', fast)).toBe(MISSING_EXIT);
  });

  it('falls back to inspect when the wait hangs', async () => {
    const exit = await waitForExit(
      { wait: never, inspect: async () => state({ running: false, exitCode: 137, oomKilled: true }) },
      'c',
      fast,
    );
    expect(exit).toEqual({ exitCode: 137, oomKilled: true });
  });

  it('asks the wait again after it failed', async () => {
    let calls = 0;
    const retried: unknown[] = [];
    const runtime = {
      wait: async (): Promise<ExitInfo> => {
        if (++calls < 3) throw new RuntimeError(RuntimeErrorCode.ENGINE_UNAVAILABLE, 'down', 'wait');
        return { exitCode: 0, oomKilled: false };
      },
      inspect: async (): Promise<ContainerState> => {
        throw new Error('engine away');
      },
    };
    expect(await waitForExit(runtime, 'c', { ...fast, onRetry: (err) => retried.push(err) })).toEqual({ exitCode: 0, oomKilled: false });
    expect(calls).toBe(3);
    expect(retried).toHaveLength(2);
  });

  it('rejects with the reason of its abort signal', async () => {
    const ac = new AbortController();
    const p = waitForExit({ wait: never, inspect: async () => state({}) }, 'c', { ...fast, signal: ac.signal });
    ac.abort(new Error('given up'));
    await expect(p).rejects.toThrow('given up');
  });
});
