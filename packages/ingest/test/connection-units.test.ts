import { afterEach, describe, expect, it, vi } from 'vitest';
import { Batcher } from '../src/batcher.js';
import { parseEventLine, rejectedEvent, throttledEvent } from '../src/event-line.js';
import { LineFramer } from '../src/line-framer.js';
import { ConnectionThrottle, TokenBucket } from '../src/rate-limit.js';

describe('LineFramer', () => {
  const frame = (maxLine: number) => {
    const out: string[] = [];
    const framer = new LineFramer(
      maxLine,
      (line) => out.push(line),
      () => out.push('<overflow>'),
    );
    return { framer, out };
  };

  it('cuts lines across chunks and keeps an unfinished line for the next chunk', () => {
    const { framer, out } = frame(100);
    framer.push('a\nb');
    framer.push('c\n\nd');
    expect(out).toEqual(['a', 'bc', '']);
    framer.push('\n');
    expect(out).toEqual(['a', 'bc', '', 'd']);
  });

  it('reports an over-long line once and drops the rest of it up to its newline', () => {
    const { framer, out } = frame(5);
    framer.push('123456');
    framer.push('789');
    framer.push('0\nok\n');
    expect(out).toEqual(['<overflow>', 'ok']);
  });
});

describe('parseEventLine', () => {
  const now = () => 42;
  const line = (o: unknown) => JSON.stringify(o);

  it('reads a valid event, keeping its ts or stamping one', () => {
    expect(parseEventLine(line({ t: 'ev', rid: 3, type: 'LOG', ts: 7, data: { text: 'x' } }), 1000, now)).toEqual({
      rid: 3,
      type: 'LOG',
      ts: 7,
      data: { text: 'x' },
    });
    expect(parseEventLine(line({ t: 'ev', rid: 3, type: 'LOG', data: {} }), 1000, now).ts).toBe(42);
  });

  it('refuses what is not an agent event, with the reason, keeping the rid when it is known', () => {
    const reason = (l: string) => {
      const e = parseEventLine(l, 1000, now);
      expect(e.type).toBe('ERROR');
      expect(e.data.code).toBe('EVENT_REJECTED');
      return [e.rid, e.data.message];
    };
    expect(reason('not json')).toEqual([0, 'an event line was not valid JSON']);
    expect(reason(line({ t: 'ev', rid: 0, type: 'LOG', data: {} }))).toEqual([0, 'an event lacked t:"ev" or a positive integer rid']);
    expect(reason(line({ t: 'ev', rid: 5, type: 'FOO', data: {} }))).toEqual([5, 'event type "FOO" is not an agent event type']);
    expect(reason(line({ t: 'ev', rid: 6, type: 'LOG', data: [] }))).toEqual([6, 'a LOG event had no data object']);
  });

  it('judges an oversize line by its size, reading rid and type from its head', () => {
    const big = line({ t: 'ev', rid: 9, type: 'MESSAGE', data: { text: 'x'.repeat(200) } });
    const e = parseEventLine(big, 100, now);
    expect(e).toMatchObject({ rid: 9, type: 'ERROR', ts: 42 });
    expect(e.data.message).toBe(`a MESSAGE event of ${big.length} bytes exceeds the limit of 100 bytes`);
    expect(parseEventLine('y'.repeat(150), 100, now).data.message).toBe('an event line of 150 bytes exceeds the limit of 100 bytes');
  });

  it('builds the platform events stored in an event’s place', () => {
    expect(rejectedEvent(undefined, 'why', 1)).toEqual({
      rid: 0,
      type: 'ERROR',
      ts: 1,
      data: { code: 'EVENT_REJECTED', message: 'why', source: 'platform' },
    });
    expect(throttledEvent(10, 2)).toMatchObject({ rid: 0, type: 'LOG', ts: 2, data: { level: 'warn', source: 'platform' } });
  });
});

describe('TokenBucket and ConnectionThrottle', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('allows a burst of twice the rate, then reports how long until it is out of debt', () => {
    let t = 0;
    const bucket = new TokenBucket(10, () => t);
    expect(bucket.spend(20)).toBe(0);
    expect(bucket.spend(5)).toBe(500);
    t = 250;
    expect(bucket.waitMs()).toBe(250);
    t = 500;
    expect(bucket.waitMs()).toBe(0);
    expect(bucket.firstThrottle()).toBe(true);
    expect(bucket.firstThrottle()).toBe(false);
  });

  it('pauses a connection over the rate, warns once per session, and resumes once out of debt', () => {
    vi.useFakeTimers({ now: 0 });
    const bucket = new TokenBucket(10);
    const calls: string[] = [];
    const hooks = { pause: () => calls.push('pause'), resume: () => calls.push('resume'), throttled: () => calls.push('warn') };
    const throttle = new ConnectionThrottle(bucket, hooks);
    throttle.spend(20);
    expect(calls).toEqual([]);
    throttle.spend(3);
    throttle.spend(2);
    expect(calls).toEqual(['warn', 'pause', 'pause']);
    vi.advanceTimersByTime(499);
    expect(calls).toEqual(['warn', 'pause', 'pause']);
    vi.advanceTimersByTime(1);
    expect(calls).toEqual(['warn', 'pause', 'pause', 'resume']);
    // another connection of the same session is throttled without a second warning
    const other = new ConnectionThrottle(bucket, hooks);
    other.spend(30);
    expect(calls.slice(4)).toEqual(['pause']);
    other.close();
    vi.advanceTimersByTime(10_000);
    expect(calls.slice(4)).toEqual(['pause']);
  });

  it('does nothing without a limit', () => {
    const calls: string[] = [];
    const throttle = new ConnectionThrottle(new TokenBucket(0), {
      pause: () => calls.push('pause'),
      resume: () => calls.push('resume'),
      throttled: () => calls.push('warn'),
    });
    throttle.spend(1_000_000);
    expect(calls).toEqual([]);
  });
});

describe('Batcher', () => {
  it('delivers what was pushed as one batch on the next turn, or at once on flush', () => {
    const delivered: number[][] = [];
    const deferred: Array<() => void> = [];
    const batcher = new Batcher<number>(
      (items) => delivered.push(items),
      (fn) => deferred.push(fn),
    );
    batcher.schedule();
    expect(deferred).toHaveLength(0);
    batcher.push(1);
    batcher.push(2);
    batcher.schedule();
    batcher.schedule();
    expect(deferred).toHaveLength(1);
    batcher.push(3);
    deferred[0]?.();
    expect(delivered).toEqual([[1, 2, 3]]);
    batcher.push(4);
    batcher.flush();
    batcher.flush();
    expect(delivered).toEqual([[1, 2, 3], [4]]);
    expect(batcher.size).toBe(0);
  });
});
