import { existsSync, watch, type FSWatcher } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { basename, dirname } from 'node:path';
import type { AgentEventType } from '@mgx/agent-sdk';
import { IngestError, IngestErrorCode } from './errors.js';
import type { DialMessage, HelloMessage, ServerMessage } from './protocol.js';

export interface IngestClientOptions {
  socketPath: string;
  /** Give up when no server answered the first connect for this long. */
  connectTimeoutMs?: number;
  /**
   * Give up when a lost connection was not restored for this long. Default: never; the
   * platform's deadline bounds the container, and a restarted server adopts it.
   */
  reconnectTimeoutMs?: number;
  /** `drain()` waits while more than this many events are unacknowledged. */
  highWater?: number;
  onDebug?: (msg: string) => void;
  /** The server asks for a stream to a port inside the container (see protocol.ts, tunnel.sock). */
  onDial?: (msg: DialMessage) => void;
}

interface FlushWaiter {
  rid: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

interface Unacked {
  rid: number;
  line: string;
}

/**
 * The runner's side of ingest. Events are numbered (rid), written in order, and kept until
 * the server acknowledges them. When the connection drops (server restart) it reconnects and
 * re-sends everything after the server's lastRid; the server stores each rid once.
 */
export class IngestClient {
  readonly #o: Required<Omit<IngestClientOptions, 'onDebug' | 'onDial'>> & Pick<IngestClientOptions, 'onDebug' | 'onDial'>;
  #socket: Socket | undefined;
  #connected = false;
  #closed = false;
  #nextRid = 1;
  #unacked: Unacked[] = [];
  #out: string[] = [];
  #writeScheduled = false;
  #maxEventBytes = Number.MAX_SAFE_INTEGER;
  #waiters: FlushWaiter[] = [];
  #drainWaiters: Array<() => void> = [];
  #hello: Promise<HelloMessage> | undefined;
  #firstHello: { resolve: (h: HelloMessage) => void; reject: (e: Error) => void } | undefined;
  #lostSince: number | undefined;

  constructor(options: IngestClientOptions) {
    this.#o = { connectTimeoutMs: 30_000, reconnectTimeoutMs: Number.POSITIVE_INFINITY, highWater: 2000, ...options };
  }

  /** Waits for the socket to appear, connects, and resolves with the server's hello (the task). */
  connect(): Promise<HelloMessage> {
    this.#hello ??= new Promise<HelloMessage>((resolve, reject) => {
      this.#firstHello = { resolve, reject };
      this.#lostSince = Date.now();
      void this.#dial();
    });
    return this.#hello;
  }

  /** Queues one event; returns its rid. Oversize events become an ERROR saying so. */
  emit(type: AgentEventType, data: Record<string, unknown>): number {
    if (this.#closed) throw new IngestError(IngestErrorCode.CLOSED, 'ingest client is closed');
    const rid = this.#nextRid++;
    const ts = Date.now();
    let line = JSON.stringify({ t: 'ev', rid, type, ts, data });
    if (Buffer.byteLength(line) > this.#maxEventBytes) {
      const message = `a ${type} event of ${Buffer.byteLength(line)} bytes exceeds the limit of ${this.#maxEventBytes} bytes and was not sent`;
      line = JSON.stringify({ t: 'ev', rid, type: 'ERROR', ts, data: { code: 'EVENT_TOO_LARGE', message, source: 'runner' } });
    }
    this.#unacked.push({ rid, line });
    if (this.#connected) this.#queueWrite(line);
    return rid;
  }

  get unacknowledged(): number {
    return this.#unacked.length;
  }

  /** Resolves when fewer than `highWater` events wait for an ack. */
  drain(): Promise<void> {
    if (this.#unacked.length <= this.#o.highWater) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /** Resolves once every event emitted so far is acknowledged. */
  flush(): Promise<void> {
    const last = this.#nextRid - 1;
    if (this.#unacked.length === 0 || last === 0) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.push({ rid: last, resolve, reject }));
  }

  close(): void {
    this.#closed = true;
    this.#socket?.end();
    for (const w of this.#waiters)
      w.reject(new IngestError(IngestErrorCode.CLOSED, 'ingest client closed before all events were acknowledged'));
    this.#waiters = [];
  }

  async #waitForSocketFile(): Promise<void> {
    if (existsSync(this.#o.socketPath)) return;
    // a pooled container starts before its session exists: wait for the socket to appear
    await new Promise<void>((resolve) => {
      let watcher: FSWatcher | undefined;
      const done = () => {
        clearInterval(poll);
        watcher?.close();
        resolve();
      };
      const poll = setInterval(() => existsSync(this.#o.socketPath) && done(), 50);
      try {
        watcher = watch(dirname(this.#o.socketPath), (_e, name) => {
          if (name === basename(this.#o.socketPath) && existsSync(this.#o.socketPath)) done();
        });
        watcher.on('error', () => {});
      } catch {
        // no inotify here: the poll covers it
      }
    });
  }

  async #dial(): Promise<void> {
    if (this.#closed) return;
    const since = this.#lostSince ?? Date.now();
    const limit = this.#firstHello ? this.#o.connectTimeoutMs : this.#o.reconnectTimeoutMs;
    if (Date.now() - since > limit) {
      const err = new IngestError(IngestErrorCode.CONNECT_TIMEOUT, `no ingest server answered on ${this.#o.socketPath} for ${limit} ms`);
      this.#firstHello?.reject(err);
      for (const w of this.#waiters) w.reject(err);
      this.#waiters = [];
      return;
    }
    await this.#waitForSocketFile();
    const socket = connect(this.#o.socketPath);
    this.#socket = socket;
    socket.setNoDelay(true);
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line) this.#onMessage(JSON.parse(line) as ServerMessage);
      }
    });
    socket.on('error', (err) => this.#o.onDebug?.(`ingest socket error: ${err.message}`));
    socket.on('close', () => {
      if (this.#socket !== socket) return;
      this.#connected = false;
      this.#out = [];
      if (this.#closed) return;
      this.#lostSince ??= Date.now();
      this.#o.onDebug?.('ingest connection lost; reconnecting');
      setTimeout(() => void this.#dial(), 100);
    });
  }

  #onMessage(msg: ServerMessage): void {
    if (msg.t === 'hello') {
      this.#maxEventBytes = msg.maxEventBytes;
      this.#ack(msg.lastRid);
      this.#connected = true;
      this.#lostSince = undefined;
      for (const u of this.#unacked) this.#queueWrite(u.line);
      this.#firstHello?.resolve(msg);
      this.#firstHello = undefined;
    } else if (msg.t === 'ack') {
      this.#ack(msg.rid);
    } else if (msg.t === 'dial') {
      this.#o.onDial?.(msg);
    } else if (msg.t === 'error') {
      this.#o.onDebug?.(`ingest server refused: ${msg.message}`);
    }
  }

  #ack(rid: number): void {
    // the unacked are in rid order: drop those up to the first one above `rid`
    const above = this.#unacked.findIndex((u) => u.rid > rid);
    const n = above < 0 ? this.#unacked.length : above;
    if (n > 0) this.#unacked.splice(0, n);
    if (this.#waiters.length > 0) {
      const still: FlushWaiter[] = [];
      for (const w of this.#waiters) {
        if (w.rid <= rid) w.resolve();
        else still.push(w);
      }
      this.#waiters = still;
    }
    if (this.#unacked.length <= this.#o.highWater && this.#drainWaiters.length > 0) {
      const ws = this.#drainWaiters;
      this.#drainWaiters = [];
      for (const w of ws) w();
    }
  }

  #queueWrite(line: string): void {
    this.#out.push(line);
    if (this.#writeScheduled) return;
    this.#writeScheduled = true;
    setImmediate(() => {
      this.#writeScheduled = false;
      const lines = this.#out;
      this.#out = [];
      if (lines.length > 0 && this.#connected && this.#socket && !this.#socket.destroyed) {
        this.#socket.write(`${lines.join('\n')}\n`);
      }
    });
  }
}
