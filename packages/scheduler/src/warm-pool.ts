import { randomBytes } from 'node:crypto';
import { lstatSync, mkdirSync, renameSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { poolSpecKey, silentLogger, type Logger, type PoolSpec, type Settings } from '@mgx/config';
import type { Metrics } from '@mgx/metrics';
import { LABELS, type ContainerRuntime } from '@mgx/runtime';
import { agentContainerSpec } from './container-spec.js';
import { agentOwnedDir } from './workspaces.js';

export interface WarmPoolOptions {
  runtime: ContainerRuntime;
  settings: Settings;
  metrics: Metrics;
  logger?: Logger;
}

/** Where a claimed container's directories must end up: the session's own paths. */
export interface ClaimTarget {
  workspace: string;
  socketDir: string;
}

export type TakeResult = { containerId: string } | { miss: 'empty' | 'no_pool' | 'workspace_exists' };

interface Slot {
  id: string;
  key: string;
  containerId: string;
  workspace: string;
  socketDir: string;
}

/**
 * Started agent containers, kept idle per spec (image and limits) until a session takes
 * one, so a session starts without waiting for create, start and the runner's boot.
 *
 * A pooled container holds nothing of any session: its workspace and socket directories
 * are empty slot directories, its env and labels name no session. Taking it renames those
 * directories (same filesystem, same inodes, so the container's mounts follow) to the
 * session's workspace and socket paths; the hub then opens the socket, and the waiting
 * runner connects and receives its task. Each container serves one session only.
 * Only a workspace that does not exist yet can be handed over this way: a session on an
 * existing workspace gets a new container (mounts cannot change after create).
 */
export class WarmPool {
  readonly #o: WarmPoolOptions & { logger: Logger };
  readonly #ready = new Map<string, Slot[]>();
  readonly #specs = new Map<string, PoolSpec>();
  readonly #filling = new Set<string>();
  readonly #fills = new Set<Promise<void>>();
  readonly #failures = new Map<string, number>();
  readonly #blockedUntil = new Map<string, number>();
  readonly #retryTimers = new Map<string, NodeJS.Timeout>();
  readonly #workspaceRoot: string;
  readonly #socketRoot: string;
  #closed = false;

  constructor(options: WarmPoolOptions) {
    this.#o = { logger: silentLogger, ...options };
    const { dataDir } = options.settings.store;
    // per owner: several workers may share a data directory
    // under the workspace root: a pooled workspace is renamed into place, on the same filesystem
    this.#workspaceRoot = join(options.settings.store.workspaceRoot, '.pool', options.settings.owner);
    this.#socketRoot = join(dataDir, 'run', 'pool', options.settings.owner);
    for (const spec of options.settings.pool.specs) {
      this.#specs.set(poolSpecKey(spec), spec);
      this.#ready.set(poolSpecKey(spec), []);
    }
  }

  /** True while a top-up is creating containers (a failed one is then waiting for its back-off). */
  get filling(): boolean {
    return this.#fills.size > 0;
  }

  /** Ready containers per spec key. */
  get ready(): Record<string, number> {
    return Object.fromEntries([...this.#ready].map(([k, v]) => [k, v.length]));
  }

  /**
   * Clears what an earlier process left (its containers are removed by the scheduler's
   * reconcile) and fills every spec's pool in the background.
   */
  async start(): Promise<void> {
    await rm(this.#workspaceRoot, { recursive: true, force: true });
    await rm(this.#socketRoot, { recursive: true, force: true });
    await mkdir(this.#workspaceRoot, { recursive: true, mode: 0o711 });
    await mkdir(this.#socketRoot, { recursive: true, mode: 0o755 });
    this.#o.metrics.poolTarget.set(this.#o.settings.pool.size);
    for (const key of this.#specs.keys()) {
      this.#o.metrics.poolReady.set({ spec: key }, 0);
      this.#topUp(key);
    }
  }

  /**
   * Hands a ready container with these limits to a session whose workspace is `to.workspace`,
   * or says why it cannot. On success the container is the session's: the pool forgets it.
   */
  async take(limits: PoolSpec, to: ClaimTarget): Promise<TakeResult> {
    const key = poolSpecKey(limits);
    const ready = this.#ready.get(key);
    const miss = (reason: 'empty' | 'no_pool' | 'workspace_exists'): TakeResult => {
      this.#o.metrics.poolMisses.inc({ reason });
      return { miss: reason };
    };
    if (this.#closed || !ready) return miss('no_pool');
    // synchronous on purpose: a few metadata syscalls on the session's critical path, not
    // worth a round trip through the libuv pool, and no other take or workspace can come
    // between the check and the rename (a rename onto an empty directory would replace it)
    if (lstatSync(to.workspace, { throwIfNoEntry: false })) return miss('workspace_exists');
    const slot = ready.shift();
    if (!slot) {
      this.#topUp(key);
      return miss('empty');
    }
    this.#gauge(key);
    let movedWorkspace = false;
    try {
      mkdirSync(dirname(to.workspace), { recursive: true, mode: 0o711 });
      renameSync(slot.workspace, to.workspace);
      movedWorkspace = true;
      mkdirSync(dirname(to.socketDir), { recursive: true, mode: 0o755 });
      renameSync(slot.socketDir, to.socketDir);
    } catch (err) {
      this.#o.logger.error({ containerId: slot.containerId, err }, 'could not hand over a pooled container; discarding it');
      // undo only what was done here: a workspace that failed to move may be someone else's
      if (movedWorkspace) renameSync(to.workspace, slot.workspace);
      void this.#discard(slot);
      this.#topUp(key);
      return miss('empty');
    }
    this.#o.metrics.poolHits.inc();
    this.#failures.delete(key);
    this.#topUp(key);
    return { containerId: slot.containerId };
  }

  /** Stops filling and removes every container still idle in the pool. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const t of this.#retryTimers.values()) clearTimeout(t);
    await Promise.allSettled([...this.#fills]);
    const slots = [...this.#ready.values()].flat();
    for (const key of this.#ready.keys()) this.#ready.set(key, []);
    await Promise.allSettled(slots.map((s) => this.#discard(s)));
    for (const key of this.#ready.keys()) this.#gauge(key);
  }

  #gauge(key: string): void {
    this.#o.metrics.poolReady.set({ spec: key }, this.#ready.get(key)?.length ?? 0);
  }

  /** Creates containers for `key` one at a time until the pool is full again. */
  #topUp(key: string): void {
    if (this.#closed || this.#filling.has(key)) return;
    const wait = (this.#blockedUntil.get(key) ?? 0) - Date.now();
    if (wait > 0) {
      if (!this.#retryTimers.has(key)) {
        const timer = setTimeout(() => {
          this.#retryTimers.delete(key);
          this.#topUp(key);
        }, wait);
        timer.unref();
        this.#retryTimers.set(key, timer);
      }
      return;
    }
    this.#filling.add(key);
    const p: Promise<void> = this.#fill(key).then((failed) => {
      this.#filling.delete(key);
      this.#fills.delete(p);
      // schedules the retry once the back-off has passed
      if (failed) this.#topUp(key);
    });
    this.#fills.add(p);
  }

  /** Resolves true when a create failed. */
  async #fill(key: string): Promise<boolean> {
    const spec = this.#specs.get(key);
    // the live list: close() replaces the lists only after every fill has settled
    const ready = this.#ready.get(key);
    if (!spec || !ready) return false;
    try {
      while (!this.#closed && ready.length < this.#o.settings.pool.size) {
        const slot = await this.#create(key, spec);
        if (this.#closed) {
          await this.#discard(slot);
          return false;
        }
        ready.push(slot);
        this.#gauge(key);
        this.#watch(slot);
      }
      return false;
    } catch (err) {
      const retryInMs = this.#failed(key);
      this.#o.logger.error({ spec: key, err, code: (err as { code?: string }).code, retryInMs }, 'warm pool could not create a container');
      return true;
    }
  }

  /**
   * Counts a failure (a create that failed, a container that died idle) and holds the
   * spec's top-up back, longer each time, so a broken image does not become a create loop.
   * A session taking a container resets it.
   */
  #failed(key: string): number {
    const failures = (this.#failures.get(key) ?? 0) + 1;
    this.#failures.set(key, failures);
    const delayMs = Math.min(60_000, 500 * 2 ** Math.min(failures, 7));
    this.#blockedUntil.set(key, Date.now() + delayMs);
    return delayMs;
  }

  async #create(key: string, spec: PoolSpec): Promise<Slot> {
    const { runtime, settings } = this.#o;
    const id = `p${randomBytes(6).toString('hex')}`;
    const slot: Slot = { id, key, containerId: '', workspace: join(this.#workspaceRoot, id), socketDir: join(this.#socketRoot, id) };
    await agentOwnedDir(slot.workspace, settings.agent.user, 'pool workspace');
    await mkdir(slot.socketDir, { mode: 0o755 });
    try {
      slot.containerId = await runtime.create(
        agentContainerSpec(settings, {
          name: `mgx-pool-${id}`,
          labels: { [LABELS.managed]: 'true', [LABELS.owner]: settings.owner, [LABELS.pool]: key },
          workspace: slot.workspace,
          socketDir: slot.socketDir,
          limits: spec,
          pooled: true,
        }),
      );
      await runtime.start(slot.containerId);
    } catch (err) {
      await this.#discard(slot);
      throw err;
    }
    this.#o.logger.debug({ containerId: slot.containerId, spec: key }, 'warm pool container ready');
    return slot;
  }

  /** A pooled container that exits while idle (killed, crashed) leaves the pool and is replaced. */
  #watch(slot: Slot): void {
    const isIdle = () => this.#ready.get(slot.key)?.includes(slot) ?? false;
    const check = async (): Promise<void> => {
      try {
        await this.#o.runtime.wait(slot.containerId);
      } catch {
        // the engine went away: look again while the container is still ours
        await new Promise((r) => setTimeout(r, 1000).unref());
        if (!isIdle() || this.#closed) return;
        const state = await this.#o.runtime.inspect(slot.containerId).catch(() => undefined);
        if (state === undefined || state?.running) return check();
      }
      const ready = this.#ready.get(slot.key);
      if (!ready?.includes(slot) || this.#closed) return;
      ready.splice(ready.indexOf(slot), 1);
      this.#gauge(slot.key);
      const logs = await this.#o.runtime.logs(slot.containerId, 4096).catch(() => []);
      this.#o.logger.warn(
        { containerId: slot.containerId, spec: slot.key, logs: logs.map((l) => l.text).slice(-10) },
        'an idle warm pool container exited; replacing it',
      );
      await this.#discard(slot);
      this.#failed(slot.key);
      this.#topUp(slot.key);
    };
    void check();
  }

  async #discard(slot: Slot): Promise<void> {
    if (slot.containerId) await this.#o.runtime.remove(slot.containerId).catch(() => undefined);
    await rm(slot.workspace, { recursive: true, force: true });
    await rm(slot.socketDir, { recursive: true, force: true });
  }
}
