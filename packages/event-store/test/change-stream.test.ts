import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ChangeStream, Document } from 'mongodb';
import { silentLogger } from '@mgx/config';
import { backoffDelay, CHANGE_STREAM_BACKOFF, KeptChangeStream, type Backoff } from '../src/change-stream.js';

// No server needed: the reopen policy of the MongoDB store's change streams.
describe('change stream back-off', () => {
  const policy: Backoff = { initialMs: 100, maxMs: 5000, factor: 2, jitter: 0.5 };

  it('grows exponentially from the initial delay and stops at the cap', () => {
    const top = () => 0; // no random share taken off
    expect([0, 1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(n, policy, top))).toEqual([100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    expect(backoffDelay(1000, policy, top)).toBe(5000);
    expect(backoffDelay(-3, policy, top)).toBe(100);
  });

  it('takes at most the jitter share off at random, never more, never below zero', () => {
    for (const attempt of [0, 3, 10]) {
      const full = Math.min(policy.maxMs, policy.initialMs * 2 ** attempt);
      expect(backoffDelay(attempt, policy, () => 1)).toBe(full / 2);
      expect(backoffDelay(attempt, policy, () => 0.5)).toBe(full * 0.75);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(attempt, policy);
        expect(d).toBeGreaterThanOrEqual(full / 2);
        expect(d).toBeLessThanOrEqual(full);
      }
    }
    expect(backoffDelay(2, { ...policy, jitter: 7 }, () => 1)).toBe(0);
    expect(backoffDelay(2, { ...policy, jitter: 0 }, () => 1)).toBe(400);
  });

  it('has a default that starts under a second and waits at most half a minute', () => {
    expect(backoffDelay(0, CHANGE_STREAM_BACKOFF, () => 0)).toBeLessThan(1000);
    expect(backoffDelay(50, CHANGE_STREAM_BACKOFF, () => 0)).toBe(30_000);
  });
});

/** A stand-in for the driver's ChangeStream: an emitter that can be closed. */
class FakeStream extends EventEmitter {
  closed = false;
  async close(): Promise<void> {
    this.closed = true;
    this.emit('close');
  }
}

describe('a kept change stream', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  const setup = (failOpens = 0) => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const streams: FakeStream[] = [];
    const changes: Document[] = [];
    const logged: { level: string; obj: object; msg: string | undefined }[] = [];
    let reopened = 0;
    let opens = 0;
    const logger = {
      ...silentLogger,
      warn: (obj: object, msg?: string) => void logged.push({ level: 'warn', obj, msg }),
      info: (obj: object, msg?: string) => void logged.push({ level: 'info', obj, msg }),
    };
    const kept = new KeptChangeStream({
      name: 'events',
      open: () => {
        opens++;
        if (opens <= failOpens) throw new Error('no primary');
        const s = new FakeStream();
        streams.push(s);
        return s as unknown as ChangeStream<Document>;
      },
      onChange: (c) => void changes.push(c),
      onReopen: () => void reopened++,
      logger,
      backoff: { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0 },
    });
    return { kept, streams, changes, logged, reopened: () => reopened, opens: () => opens };
  };

  it('reopens a failed stream after the back-off, logs both, and wakes everyone once it answers', async () => {
    const t = setup();
    t.kept.start();
    t.kept.start(); // idempotent
    expect(t.streams).toHaveLength(1);
    t.streams[0]!.emit('change', { n: 1 });
    expect(t.changes).toEqual([{ n: 1 }]);

    t.streams[0]!.emit('error', new Error('boom'));
    expect(t.streams[0]!.closed).toBe(true);
    expect(t.kept.open).toBe(false);
    expect(t.logged).toMatchObject([{ level: 'warn', obj: { stream: 'events', failures: 1, retryInMs: 100 } }]);
    await vi.advanceTimersByTimeAsync(99);
    expect(t.streams).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(t.streams).toHaveLength(2);
    expect(t.reopened()).toBe(0);
    t.streams[1]!.emit('resumeTokenChanged', {});
    expect(t.reopened()).toBe(1);
    expect(t.logged.at(-1)).toMatchObject({ level: 'info' });
    await t.kept.close();
  });

  it('backs off further while reopening keeps failing, and starts over once a stream delivers', async () => {
    const t = setup(3);
    t.kept.start();
    // three failed opens: 100, 200, 400 ms apart
    expect(t.opens()).toBe(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(t.opens()).toBe(2);
    await vi.advanceTimersByTimeAsync(199);
    expect(t.opens()).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(t.opens()).toBe(3);
    await vi.advanceTimersByTimeAsync(400);
    expect(t.opens()).toBe(4);
    expect(t.streams).toHaveLength(1);
    expect(t.logged.filter((l) => l.level === 'warn').map((l) => (l.obj as { retryInMs: number }).retryInMs)).toEqual([100, 200, 400]);

    // a stream that closes by itself right after an answer keeps backing off
    t.streams[0]!.emit('resumeTokenChanged', {});
    await t.streams[0]!.close();
    expect((t.logged.at(-1)?.obj as { retryInMs: number }).retryInMs).toBe(800);
    await vi.advanceTimersByTimeAsync(800);
    expect(t.streams).toHaveLength(2);
    // one that delivers a change is healthy: the next failure backs off from the start
    t.streams[1]!.emit('change', {});
    t.streams[1]!.emit('error', new Error('again'));
    expect((t.logged.at(-1)?.obj as { retryInMs: number }).retryInMs).toBe(100);
    await t.kept.close();
  });

  it('reopens nothing once closed, and leaves no timer behind', async () => {
    const t = setup();
    t.kept.start();
    t.streams[0]!.emit('error', new Error('boom'));
    await t.kept.close();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(t.streams).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
    t.kept.start();
    expect(t.opens()).toBe(1);
  });
});
