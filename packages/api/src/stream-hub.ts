import type { SessionEvent } from '@mgx/agent-sdk';
import type { Store } from '@mgx/event-store';
import type { Metrics } from '@mgx/metrics';

/** How a stream's SSE messages carry events: one message per event (`stream`) or per chunk of a batch (`streamBatches`). */
export type WireFormat = 'events' | 'batches';

/** A message of `streamBatches` holds at most this much event data (one bigger event goes alone). */
const BATCH_MESSAGE_BYTES = 256 * 1024;

/** Splits events into runs of at most 500 whose data adds up to about `maxBytes`. */
export function chunkBySize(events: SessionEvent[], maxBytes: number): SessionEvent[][] {
  const chunks: SessionEvent[][] = [];
  let current: SessionEvent[] = [];
  let bytes = 0;
  for (const ev of events) {
    const size = JSON.stringify(ev.data).length + 100;
    if (current.length > 0 && (bytes + size > maxBytes || current.length >= 500)) {
      chunks.push(current);
      current = [];
      bytes = 0;
    }
    current.push(ev);
    bytes += size;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}

/**
 * The SSE text of events as tRPC's SSE producer writes it (`data:` then `id:`, a blank line),
 * so the tRPC client reads it unchanged: each event's id is its seq; a batch message's id is
 * the seq of its last event.
 */
export function sseText(format: WireFormat, events: SessionEvent[]): string {
  let text = '';
  if (format === 'events') {
    for (const ev of events) text += `data: ${JSON.stringify(ev)}\nid: ${ev.seq}\n\n\n`;
    return text;
  }
  for (const chunk of chunkBySize(events, BATCH_MESSAGE_BYTES)) {
    const last = chunk.at(-1);
    if (last) text += `data: ${JSON.stringify(chunk)}\nid: ${last.seq}\n\n\n`;
  }
  return text;
}

/**
 * Events of one session in seq order after `after`, as one store read returned them (never
 * empty). The hub's frames are shared by every subscriber: their SSE bytes are made once per
 * format, on first use, and written as they are to each connection.
 */
export class Frame {
  readonly #wire: Partial<Record<WireFormat, Buffer>> = {};
  constructor(
    /** The seq the events follow (the cursor before this read). */
    readonly after: number,
    readonly events: SessionEvent[],
  ) {}

  /** The seq of the last event. */
  get last(): number {
    return this.events.at(-1)?.seq ?? this.after;
  }

  /** Ends the session's stream (its last event is FINISH). */
  get finishes(): boolean {
    return this.events.at(-1)?.type === 'FINISH';
  }

  /** The SSE bytes of these events in `format`, made once. */
  wire(format: WireFormat): Buffer {
    return (this.#wire[format] ??= Buffer.from(sseText(format, this.events)));
  }

  /** The same events after `seq` (a subscriber joining inside this frame); a frame of its own. */
  from(seq: number): Frame {
    return seq <= this.after
      ? this
      : new Frame(
          seq,
          this.events.filter((ev) => ev.seq > seq),
        );
  }

  /** Bytes made so far (the frames a hub keeps are bounded by them). */
  get bytes(): number {
    return (this.#wire.events?.length ?? 0) + (this.#wire.batches?.length ?? 0);
  }
}

/**
 * Frames a hub keeps for subscribers a little behind: at most this many, and about this many
 * bytes of SSE text (their parsed events take about as much again). Kept while any subscriber is
 * connected, a stalled one included: one further behind reads the store instead.
 */
const KEEP_FRAMES = 256;
const KEEP_BYTES = 256 * 1024;
/** A subscriber reads the store itself in runs of this many events (backlog, or behind the kept frames). */
const READ_LIMIT = 500;

/**
 * A subscriber that has caught up, written to by the hub itself as each frame arrives (no
 * promise, generator step or wake-up per subscriber and frame). It leaves for its own loop when
 * a write reports back-pressure, at a gap, at FINISH, or when the tail ends or fails.
 */
interface Sink {
  /** The seq it has received up to. */
  cursor: number;
  /** It received FINISH. */
  finished: boolean;
  /** Its last write reported back-pressure. */
  pressed: boolean;
  /** Writes a frame; false when the connection wants to drain before more. */
  deliver: (frame: Frame) => boolean;
  /** Hands the subscriber back to its own loop. */
  release: () => void;
}

/**
 * One session's live tail, shared by all its subscribers in this process: one store tail reads
 * each new stored batch once and keeps it as a frame for every subscriber. Started by the first
 * subscriber that has caught up with the store, stopped with the last one leaving or FINISH.
 */
class SessionHub {
  /** Recent frames, contiguous: each one's `after` is the previous one's `last`. */
  frames: Frame[] = [];
  /** The seq the tail has read up to; undefined while no tail runs. */
  cursor: number | undefined;
  subscribers = 0;
  /** The last failure of the tail, and how many there were: a subscriber fails with the ones it waited through. */
  failure: unknown;
  failures = 0;
  /** Caught-up subscribers written to directly. */
  readonly sinks = new Set<Sink>();
  #bytes = 0;
  #abort: AbortController | undefined;
  #wake: () => void = () => undefined;
  #changed: Promise<void>;

  constructor(
    private readonly store: Store,
    private readonly sessionId: string,
  ) {
    this.#changed = this.#nextChange();
  }

  /** Resolves at the next frame, failure or end of the tail. */
  get changed(): Promise<void> {
    return this.#changed;
  }

  get running(): boolean {
    return this.#abort !== undefined;
  }

  /** Starts the tail after `afterSeq`, unless one runs. */
  start(afterSeq: number): void {
    if (this.#abort) return;
    const abort = (this.#abort = new AbortController());
    this.cursor = afterSeq;
    void (async () => {
      try {
        for await (const events of this.store.events.tailBatches(this.sessionId, { afterSeq, signal: abort.signal })) {
          if (abort.signal.aborted) return;
          // frames of at most READ_LIMIT events: a subscriber that stops reading holds one
          for (let i = 0; i < events.length; i += READ_LIMIT)
            this.#push(new Frame(this.cursor ?? afterSeq, events.slice(i, i + READ_LIMIT)));
        }
      } catch (err) {
        if (!abort.signal.aborted) {
          this.failure = err;
          this.failures++;
        }
      } finally {
        // ended (FINISH, store closed, failure) or stopped: a later subscriber starts it again
        if (this.#abort === abort) this.#abort = undefined;
        this.#signal();
      }
    })();
  }

  stop(): void {
    for (const sink of this.sinks) this.#release(sink);
    this.#abort?.abort();
    this.#abort = undefined;
    this.cursor = undefined;
    this.frames = [];
    this.#bytes = 0;
  }

  /**
   * The kept frame holding the event after `seq` (cut at `seq` when it starts before); null when
   * none is newer, undefined when the kept frames do not reach back to `seq` (the subscriber
   * reads the store instead). One frame at a time, so a subscriber that stops reading holds one.
   */
  frameAfter(seq: number): Frame | null | undefined {
    const frames = this.frames;
    const first = frames[0];
    if (!first) return null;
    if (first.after > seq) return undefined;
    // the first frame whose last seq is past `seq`: frames are in seq order
    let lo = 0;
    let hi = frames.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((frames[mid]?.last ?? 0) > seq) hi = mid;
      else lo = mid + 1;
    }
    return frames[lo]?.from(seq) ?? null;
  }

  #push(frame: Frame): void {
    this.cursor = frame.last;
    // made now: the common format's bytes, which also bound what is kept
    frame.wire('batches');
    this.frames.push(frame);
    this.#bytes += frame.bytes;
    while (this.frames.length > 1 && (this.frames.length > KEEP_FRAMES || this.#bytes > KEEP_BYTES)) {
      this.#bytes -= this.frames.shift()?.bytes ?? 0;
    }
    for (const sink of this.sinks) {
      if (frame.last <= sink.cursor) continue; // it read this far from the store itself
      // a gap (cannot happen while the tail is contiguous): its own loop reads the store
      if (frame.after > sink.cursor) {
        this.#release(sink);
        continue;
      }
      sink.pressed = !sink.deliver(frame.from(sink.cursor));
      sink.cursor = frame.last;
      sink.finished = frame.finishes;
      if (sink.pressed || sink.finished) this.#release(sink);
    }
    this.#signal();
  }

  #release(sink: Sink): void {
    this.sinks.delete(sink);
    sink.release();
  }

  #signal(): void {
    // the tail ended or failed: direct subscribers go back to their loops, which restart or fail
    if (!this.#abort) for (const sink of this.sinks) this.#release(sink);
    const wake = this.#wake;
    this.#changed = this.#nextChange();
    wake();
  }

  #nextChange(): Promise<void> {
    return new Promise<void>((resolve) => (this.#wake = resolve));
  }
}

/**
 * The session streams of one store in this process: a hub per session with subscribers. A
 * subscriber reads the backlog from the store itself, then joins its session's hub at its own
 * seq and shares the hub's frames; one that falls behind the kept frames (it does not read)
 * reads the store again until it catches up, so no subscriber makes the hub hold more than
 * its bounded frames.
 */
export class SessionStreams {
  readonly #hubs = new Map<string, SessionHub>();

  constructor(
    private readonly store: Store,
    private readonly metrics: Metrics,
  ) {}

  /** Subscribers in this process, over all sessions (for tests and diagnostics). */
  get subscribers(): number {
    let n = 0;
    for (const hub of this.#hubs.values()) n += hub.subscribers;
    return n;
  }

  /** Sessions with a running tail (for tests and diagnostics). */
  get tails(): number {
    let n = 0;
    for (const hub of this.#hubs.values()) if (hub.running) n++;
    return n;
  }

  /**
   * The events of a session after `afterSeq`, in frames, ending after FINISH or when `signal`
   * aborts. Each seq once, in order; frames of the hub are shared, not copied. With `direct`,
   * a subscriber that has caught up gets the hub's new frames through `direct.deliver`, written
   * by the hub as they arrive, instead of from the generator. When `deliver` returns false
   * (back-pressure), it waits for `direct.drained` and goes on from its own loop.
   */
  async *follow(
    sessionId: string,
    afterSeq: number,
    signal: AbortSignal,
    direct?: { deliver: (frame: Frame) => boolean; drained: () => Promise<void> },
  ): AsyncGenerator<Frame> {
    let hub = this.#hubs.get(sessionId);
    if (!hub) this.#hubs.set(sessionId, (hub = new SessionHub(this.store, sessionId)));
    hub.subscribers++;
    this.metrics.sseSubscribers.inc();
    let stopWaiting: () => void = () => undefined;
    const aborted = new Promise<void>((resolve) => (stopWaiting = resolve));
    signal.addEventListener('abort', stopWaiting, { once: true });
    let sink: Sink | undefined;
    try {
      let cursor = afterSeq;
      // reads the store itself until one read comes back short: caught up, it waits on the hub
      let caughtUp = false;
      while (!signal.aborted) {
        const kept = hub.frameAfter(cursor);
        if (kept) {
          yield kept;
          cursor = kept.last;
          if (kept.finishes) return;
          continue;
        }
        if (!caughtUp || kept === undefined || (hub.cursor !== undefined && hub.cursor > cursor)) {
          const read = await this.store.events.read(sessionId, cursor, READ_LIMIT);
          const end = read.findIndex((ev) => ev.type === 'FINISH');
          const events = end >= 0 ? read.slice(0, end + 1) : read;
          caughtUp = read.length < READ_LIMIT;
          if (events.length > 0) {
            const frame = new Frame(cursor, events);
            yield frame;
            cursor = frame.last;
            if (frame.finishes) return;
            continue;
          }
          // the store has nothing after `cursor` yet: the hub's tail will read it
          caughtUp = true;
        }
        if (!hub.running) hub.start(cursor);
        const failures = hub.failures;
        if (direct && hub.running) {
          let release: () => void = () => undefined;
          const released = new Promise<void>((resolve) => (release = resolve));
          const mine: Sink = (sink = { cursor, finished: false, pressed: false, deliver: direct.deliver, release });
          hub.sinks.add(mine);
          await Promise.race([released, aborted]);
          hub.sinks.delete(mine);
          sink = undefined;
          cursor = mine.cursor;
          if (mine.finished) return;
          if (mine.pressed) await direct.drained();
        } else await Promise.race([hub.changed, aborted]);
        // the tail failed while this subscriber waited on it: so does the subscriber (the next one starts it again)
        if (hub.failures > failures) throw hub.failure;
      }
    } finally {
      if (sink) hub.sinks.delete(sink);
      signal.removeEventListener('abort', stopWaiting);
      this.metrics.sseSubscribers.dec();
      if (--hub.subscribers === 0) {
        hub.stop();
        if (this.#hubs.get(sessionId) === hub) this.#hubs.delete(sessionId);
      }
    }
  }
}

const registries = new WeakMap<Store, SessionStreams>();

/**
 * The session streams of a store, one registry per store so that the tRPC procedures and the
 * server's direct SSE path share the same hubs.
 */
export function sessionStreamsOf(store: Store, metrics: Metrics): SessionStreams {
  let streams = registries.get(store);
  if (!streams) registries.set(store, (streams = new SessionStreams(store, metrics)));
  return streams;
}
