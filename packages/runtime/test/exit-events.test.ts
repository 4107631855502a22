import { describe, expect, it } from 'vitest';
import { ExitEvents, RuntimeError, RuntimeErrorCode, type ContainerState, type EngineEvent } from '../src/index.js';

const state = (over: Partial<ContainerState>): ContainerState => ({
  id: 'c',
  running: true,
  exitCode: null,
  oomKilled: false,
  startedAt: 1,
  finishedAt: null,
  labels: {},
  memoryBytes: 0,
  ...over,
});
const exitedState = (exitCode: number, oomKilled = false) => state({ running: false, exitCode, oomKilled, finishedAt: 2 });
const tick = () => new Promise((r) => setTimeout(r, 5));
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (cond()) return;
    await tick();
  }
  throw new Error(`not within 2 s: ${what}`);
}

/** The engine's event stream at the port boundary: the test sends events and drops the stream. */
class FakeEngine {
  readonly states = new Map<string, ContainerState | null>();
  subscribes = 0;
  inspects = 0;
  failSubscribes = 0;
  /** Subscribes that the engine accepts and never answers; their abort signals. */
  hangSubscribes = 0;
  readonly hung: AbortSignal[] = [];
  #listener: ((e: EngineEvent) => void) | undefined;
  #end: ((err?: unknown) => void) | undefined;
  readonly subscribe = async (onEvent: (e: EngineEvent) => void, onEnd: (err?: unknown) => void, signal?: AbortSignal) => {
    this.subscribes++;
    if (this.hangSubscribes > 0) {
      this.hangSubscribes--;
      if (signal) this.hung.push(signal);
      return new Promise<never>(() => undefined);
    }
    if (this.failSubscribes > 0) {
      this.failSubscribes--;
      throw new Error('engine down');
    }
    this.#listener = onEvent;
    this.#end = onEnd;
    return { close: () => (this.#listener = undefined) };
  };
  readonly inspect = async (id: string) => {
    this.inspects++;
    const s = this.states.get(id);
    return s === undefined ? state({ id }) : s;
  };
  emit(e: EngineEvent): void {
    this.#listener?.(e);
  }
  /** The engine restarts: the stream ends with an error. */
  drop(): void {
    const end = this.#end;
    this.#listener = undefined;
    this.#end = undefined;
    end?.(new Error('socket hang up'));
  }
  get open(): boolean {
    return this.#listener !== undefined;
  }
}

const settled = <T>(p: Promise<T>) => {
  const r: { value?: T; error?: unknown; done: boolean } = { done: false };
  p.then(
    (value) => Object.assign(r, { value, done: true }),
    (error: unknown) => Object.assign(r, { error, done: true }),
  );
  return r;
};

describe('exits from engine events', () => {
  it('finds an exit whose event was lost, the stream still open, at its next sweep', async () => {
    const engine = new FakeEngine();
    const exits = new ExitEvents({ subscribe: engine.subscribe, inspect: engine.inspect, sweepMs: 20 });
    const a = settled(exits.exited('a'));
    await until(() => engine.open, 'the stream opens');
    // exited with no event: only a sweep can tell
    engine.states.set('a', exitedState(0));
    const before = engine.inspects;
    await until(() => a.done, 'a sweep finds the exit');
    expect(a.value).toEqual({ exitCode: 0, oomKilled: false });
    expect(engine.inspects).toBeGreaterThan(before);
    expect(engine.open).toBe(true);
    exits.close();
  });

  it('gives up an attempt to open the stream that never answers, and opens it again', async () => {
    const engine = new FakeEngine();
    engine.hangSubscribes = 1;
    const exits = new ExitEvents({ subscribe: engine.subscribe, inspect: engine.inspect, openTimeoutMs: 50, backoffMs: 10 });
    const a = settled(exits.exited('a'));
    await until(() => engine.open, 'the second attempt opens the stream');
    expect(engine.subscribes).toBe(2);
    expect(engine.hung.map((sig) => sig.aborted)).toEqual([true]);
    engine.states.set('a', exitedState(0));
    engine.emit({ id: 'a', action: 'die' });
    await until(() => a.done, 'a resolves');
    expect(a.value).toEqual({ exitCode: 0, oomKilled: false });
    exits.close();
  });

  it('one stream for every container; a die is confirmed by inspect before it counts', async () => {
    const engine = new FakeEngine();
    const exits = new ExitEvents(engine);
    const a = settled(exits.exited('a'));
    const b = settled(exits.exited('b'));
    await until(() => engine.open, 'the stream opens');
    expect(engine.subscribes).toBe(1);

    // an event for a container nobody watches, and a die that inspect does not confirm: nothing
    engine.emit({ id: 'other', action: 'die' });
    engine.emit({ id: 'a', action: 'died' });
    await until(() => engine.inspects >= 4, 'the die is checked');
    await tick();
    expect(a.done).toBe(false);

    engine.states.set('a', exitedState(137, true));
    engine.emit({ id: 'a', action: 'start' });
    await tick();
    expect(a.done).toBe(false);
    engine.emit({ id: 'a', action: 'died' });
    await until(() => a.done, 'a resolves');
    expect(a.value).toEqual({ exitCode: 137, oomKilled: true });

    engine.states.set('b', exitedState(0));
    engine.emit({ id: 'b', action: 'die' });
    await until(() => b.done, 'b resolves');
    expect(b.value).toEqual({ exitCode: 0, oomKilled: false });
    expect(engine.subscribes).toBe(1);
    exits.close();
  });

  it('a container that exited before it was watched is found at once; one that is gone is reported so', async () => {
    const engine = new FakeEngine();
    const exits = new ExitEvents(engine);
    engine.states.set('done', exitedState(3));
    expect(await exits.exited('done')).toEqual({ exitCode: 3, oomKilled: false });
    engine.states.set('gone', null);
    const err = await exits.exited('gone').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RuntimeError);
    expect((err as RuntimeError).code).toBe(RuntimeErrorCode.CONTAINER_NOT_FOUND);
    // a created container that never ran is not an exit
    engine.states.set('created', state({ running: false, exitCode: 0, finishedAt: null }));
    const created = settled(exits.exited('created'));
    await until(() => engine.inspects >= 3, 'inspected');
    await tick();
    expect(created.done).toBe(false);
    exits.close();
  });

  it('reopens a lost stream with back-off and finds the exits it missed meanwhile', async () => {
    const engine = new FakeEngine();
    const exits = new ExitEvents({ ...engine, subscribe: engine.subscribe, inspect: engine.inspect, backoffMs: 5, maxBackoffMs: 40 });
    const a = settled(exits.exited('a'));
    await until(() => exits.connected, 'the stream opens');
    // the engine restarts; the container exits while no stream is open, and the first two
    // attempts to reopen fail
    engine.failSubscribes = 2;
    engine.drop();
    engine.states.set('a', exitedState(143));
    await until(() => a.done, 'the exit is found after the stream is back');
    expect(a.value).toEqual({ exitCode: 143, oomKilled: false });
    expect(engine.subscribes).toBe(4);
    expect(exits.connected).toBe(true);
    exits.close();
  });

  it('a watch called off leaves the others; nothing reconnects once closed', async () => {
    const engine = new FakeEngine();
    const exits = new ExitEvents({ subscribe: engine.subscribe, inspect: engine.inspect, backoffMs: 5 });
    const ac = new AbortController();
    const a = settled(exits.exited('a', ac.signal));
    const b = settled(exits.exited('b'));
    ac.abort(new Error('not needed'));
    await until(() => a.done, 'a is called off');
    expect((a.error as Error).message).toBe('not needed');
    engine.states.set('a', exitedState(0));
    engine.states.set('b', exitedState(1));
    await until(() => engine.open, 'the stream opens');
    engine.emit({ id: 'b', action: 'die' });
    await until(() => b.done, 'b resolves');
    exits.close();
    engine.drop();
    await tick();
    await tick();
    expect(engine.subscribes).toBe(1);
  });
});
