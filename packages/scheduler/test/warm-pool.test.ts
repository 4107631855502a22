import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadSettings, type PoolSpec } from '@mgx/config';
import { createMetrics } from '@mgx/metrics';
import { RuntimeError, RuntimeErrorCode, type ContainerRuntime, type ContainerSpec, type ExitInfo } from '@mgx/runtime';
import { WarmPool } from '../src/index.js';

/** The engine at its port boundary: containers that run until killed or removed. */
class FakeRuntime implements Partial<ContainerRuntime> {
  readonly created: ContainerSpec[] = [];
  readonly removed: string[] = [];
  readonly #exits = new Map<string, (e: ExitInfo) => void>();
  failCreates = false;
  #n = 0;
  create = async (spec: ContainerSpec) => {
    if (this.failCreates) throw new RuntimeError(RuntimeErrorCode.ENGINE_REJECTED, 'no such image', 'create');
    this.created.push(spec);
    return `c${++this.#n}`;
  };
  start = async () => {};
  wait = (id: string) => new Promise<ExitInfo>((resolve) => this.#exits.set(id, resolve));
  inspect = async () => null;
  logs = async () => [];
  remove = async (id: string) => {
    this.removed.push(id);
    this.#exits.get(id)?.({ exitCode: 137, oomKilled: false });
  };
  /** The container dies on its own. */
  die(id: string) {
    this.#exits.get(id)?.({ exitCode: 1, oomKilled: false });
  }
}

const dirs: string[] = [];
afterEach(() => {
  vi.useRealTimers();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function fixture(env: Record<string, string> = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'mgx-pool-unit-'));
  dirs.push(dataDir);
  const user = `${process.getuid!()}:${process.getgid!()}`;
  const settings = loadSettings({
    MGX_DATA_DIR: dataDir,
    MGX_OWNER: 'unit',
    MGX_WARM_POOL_SIZE: '2',
    AGENT_CONTAINER_MEMORY_LIMIT: '256m',
    AGENT_CONTAINER_USER: user === '0:0' ? '10001:10001' : user,
    ...env,
  });
  const runtime = new FakeRuntime();
  const metrics = createMetrics({ version: 't', node: process.version }, { defaultMetrics: false });
  const pool = new WarmPool({ runtime: runtime as unknown as ContainerRuntime, settings, metrics });
  const limits: PoolSpec = settings.pool.specs[0]!;
  const target = (id: string) => ({ workspace: join(dataDir, 'workspaces', id), socketDir: join(dataDir, 'run', 'sessions', id) });
  const until = async (ok: () => boolean) => {
    for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 5));
    expect(ok()).toBe(true);
  };
  return { dataDir, settings, runtime, metrics, pool, limits, target, until };
}

describe('WarmPool', () => {
  it('creates pooled containers with no session in their labels or env, and empty slot directories', async () => {
    const f = fixture();
    await f.pool.start();
    await f.until(() => f.pool.ready['256m-100mcpu-none'] === 2);
    for (const spec of f.runtime.created) {
      expect(spec.name).toMatch(/^mgx-pool-p[0-9a-f]{12}$/);
      expect(spec.labels).toEqual({ 'mgx.managed': 'true', 'mgx.owner': 'unit', 'mgx.pool': '256m-100mcpu-none' });
      expect(Object.keys(spec.env).sort()).toEqual(['HOME', 'MGX_INGEST_SOCKET', 'MGX_POOLED', 'MGX_WORKSPACE']);
      expect(spec.memoryBytes).toBe(256 * 1024 ** 2);
      for (const m of spec.mounts) expect(readdirSync(m.hostPath)).toEqual([]);
    }
    await f.pool.close();
  });

  it('hands a container over by moving its directories to the session paths, then tops up', async () => {
    const f = fixture();
    await f.pool.start();
    await f.until(() => f.pool.ready['256m-100mcpu-none'] === 2);
    const first = f.runtime.created[0]!;
    const to = f.target('ws1');
    expect(await f.pool.take(f.limits, to)).toEqual({ containerId: 'c1' });
    // the very directories the container has mounted are now the session's
    expect(existsSync(to.workspace) && existsSync(to.socketDir)).toBe(true);
    for (const m of first.mounts) expect(existsSync(m.hostPath)).toBe(false);
    await f.until(() => f.runtime.created.length === 3 && f.pool.ready['256m-100mcpu-none'] === 2);
    expect((await f.metrics.poolHits.get()).values[0]!.value).toBe(1);
    await f.pool.close();
  });

  it('says why it cannot serve: other limits, an existing workspace, nothing ready', async () => {
    const f = fixture({ MGX_WARM_POOL_SIZE: '1' });
    await f.pool.start();
    await f.until(() => f.pool.ready['256m-100mcpu-none'] === 1);
    expect(await f.pool.take({ ...f.limits, memoryBytes: 128 * 1024 ** 2 }, f.target('a'))).toEqual({ miss: 'no_pool' });
    mkdirSync(join(f.dataDir, 'workspaces', 'used'), { recursive: true });
    writeFileSync(join(f.dataDir, 'workspaces', 'used', 'keep.txt'), 'x');
    expect(await f.pool.take(f.limits, f.target('used'))).toEqual({ miss: 'workspace_exists' });
    // an empty existing workspace is refused as well: a rename would replace it under whoever uses it
    mkdirSync(join(f.dataDir, 'workspaces', 'empty'));
    expect(await f.pool.take(f.limits, f.target('empty'))).toEqual({ miss: 'workspace_exists' });
    expect(await f.pool.take(f.limits, f.target('b'))).toEqual({ containerId: 'c1' });
    expect(await f.pool.take(f.limits, f.target('c'))).toEqual({ miss: 'empty' });
    const misses = Object.fromEntries((await f.metrics.poolMisses.get()).values.map((v) => [v.labels.reason, v.value]));
    expect(misses).toEqual({ empty: 1, no_pool: 1, workspace_exists: 2 });
    await f.pool.close();
  });

  it('backs off when creates fail, instead of looping on a broken image', async () => {
    // timers and the clock are faked; file system calls still need real time to complete, as
    // long as the machine takes: wait until no top-up is in flight
    const realSetTimeout = globalThis.setTimeout;
    const settle = async () => {
      do await new Promise((r) => realSetTimeout(r, 20));
      while (f.pool.filling);
    };
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const f = fixture();
    f.runtime.failCreates = true;
    let attempts = 0;
    const create = f.runtime.create;
    f.runtime.create = (spec) => {
      attempts++;
      return create(spec);
    };
    await f.pool.start();
    await settle();
    expect(attempts).toBe(1);
    // then after 1 s, 2 s more, 4 s more: not before
    for (const [wait, expected] of [
      [999, 1],
      [1, 2],
      [1999, 2],
      [1, 3],
      [3999, 3],
      [1, 4],
    ] as const) {
      await vi.advanceTimersByTimeAsync(wait);
      await settle();
      expect(attempts).toBe(expected);
    }
    f.runtime.failCreates = false;
    await vi.advanceTimersByTimeAsync(8_000);
    await settle();
    expect(f.pool.ready['256m-100mcpu-none']).toBe(2);
    await f.pool.close();
  });

  it('replaces a container that dies idle, and removes the idle ones on close', async () => {
    const f = fixture();
    await f.pool.start();
    await f.until(() => f.pool.ready['256m-100mcpu-none'] === 2);
    f.runtime.die('c1');
    await f.until(() => f.runtime.removed.includes('c1'));
    // after a short back-off the pool is full again, without c1
    await new Promise((r) => setTimeout(r, 1100));
    await f.until(() => f.pool.ready['256m-100mcpu-none'] === 2 && f.runtime.created.length === 3);
    await f.pool.close();
    expect(f.runtime.removed.sort()).toEqual(['c1', 'c2', 'c3']);
    expect(readdirSync(join(f.dataDir, 'workspaces', '.pool', 'unit'))).toEqual([]);
  });
});
