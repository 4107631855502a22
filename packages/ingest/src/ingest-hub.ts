import { mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { FinishData } from '@mgx/agent-sdk';
import { grantToAgentUser, silentLogger, type Logger } from '@mgx/config';
import { Batcher } from './batcher.js';
import { IngestError, IngestErrorCode } from './errors.js';
import { parseEventLine, rejectedEvent, throttledEvent, type IngestedEvent } from './event-line.js';
import { LineFramer } from './line-framer.js';
import {
  PROTOCOL_VERSION,
  SERVICE_SOCKETS,
  SOCKET_NAME,
  type DialMessage,
  type HelloMessage,
  type ServiceName,
  type SessionTask,
} from './protocol.js';
import { ConnectionThrottle, TokenBucket } from './rate-limit.js';

export type { IngestedEvent } from './event-line.js';

/**
 * An ingested event as the store takes it. rid 0 marks an event the platform wrote in the
 * runner's place (a refusal, a throttle warning): it has no runner id to dedupe on.
 */
export function toStoredEvent(e: IngestedEvent): { type: IngestedEvent['type']; data: Record<string, unknown>; ts: number; rid?: number } {
  return { type: e.type, data: e.data, ts: e.ts, ...(e.rid > 0 ? { rid: e.rid } : {}) };
}

/**
 * Where ingested events go. The hub only calls it; the composition decides what it does
 * (append to the store; FINISH to the monitor).
 */
export interface IngestSink {
  lastRid(sessionId: string): Promise<number>;
  /** Stores events in order; a throw leaves them unacknowledged, so the runner re-sends. */
  append(sessionId: string, events: IngestedEvent[]): Promise<void>;
  /** The agent's FINISH. Resolves once the outcome is durable; then the runner is acked. */
  finish(sessionId: string, event: IngestedEvent & { data: FinishData & Record<string, unknown> }): Promise<void>;
}

export interface IngestHubOptions {
  /** Directory holding one sub-directory per session with its socket. */
  baseDir: string;
  sink: IngestSink;
  maxEventBytes: number;
  /** The container user, which must be able to connect (uid:gid). */
  containerUser: string;
  logger?: Logger;
  /** Pause reading a connection with more than this many events waiting to be stored. */
  highWater?: number;
  /**
   * Sustained events per second per session (0: unlimited), with bursts up to twice that.
   * Over it the socket is paused: the runner buffers and its agent is slowed, nothing is lost.
   */
  maxEventsPerSecond?: number;
  /**
   * Services on sockets of their own beside ingest.sock (SERVICE_SOCKETS): each connection
   * arriving on one is handed to its service with the session it belongs to.
   */
  services?: Partial<Record<Exclude<ServiceName, 'tunnel'>, SessionService>>;
  /** How long `dial` waits for the runner to connect back. */
  dialTimeoutMs?: number;
}

/** A service reached through a session's socket directory (the model gateway, the egress proxy). */
export interface SessionService {
  /** Whether this session gets the service's socket at all. */
  offers(task: SessionTask): boolean;
  /** A connection on the session's socket; it belongs to `sessionId`, whatever it says. */
  accept(sessionId: string, socket: Socket): void;
}

interface PendingDial {
  resolve: (socket: Socket) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

interface QueuedBatch {
  socket: Socket;
  events: IngestedEvent[];
}

interface Channel {
  task: SessionTask;
  dir: string;
  /** A session this process just started: its runner's first hello needs no store read. */
  fresh: boolean;
  server: Server;
  socket: Socket | undefined;
  /** Serializes stores and acks of the session across connections, so order holds. */
  chain: Promise<void>;
  /**
   * The last batch on the chain while it waits for the store in front of it: events that arrive
   * meanwhile join it, so a store that falls behind catches up with fewer, larger writes.
   */
  open: QueuedBatch | undefined;
  pending: number;
  idleWaiters: Array<() => void>;
  received: number;
  /** Token bucket of the rate limit, shared by the session's connections. */
  bucket: TokenBucket;
  /** The servers of the session's other sockets (tunnel.sock, model.sock, …). */
  extra: Server[];
  services: ServiceName[];
  /** Connections accepted on those sockets, ended with the channel. */
  conns: Set<Socket>;
  dials: Map<string, PendingDial>;
}

/**
 * The host side of ingest: one unix socket per session, in a directory mounted into that
 * session's container only. The socket is the container's identity: whatever arrives on
 * it belongs to its session, whatever the payload says.
 */
export class IngestHub {
  readonly #o: Required<Omit<IngestHubOptions, 'logger' | 'services'>> & Pick<IngestHubOptions, 'services'> & { logger: Logger };
  readonly #channels = new Map<string, Channel>();

  constructor(options: IngestHubOptions) {
    this.#o = { highWater: 5000, maxEventsPerSecond: 0, dialTimeoutMs: 10_000, logger: silentLogger, ...options };
  }

  /** Host directory to bind-mount at CONTAINER_SOCKET_DIR for this session. */
  dirFor(sessionId: string): string {
    return join(this.#o.baseDir, sessionId);
  }

  isOpen(sessionId: string): boolean {
    return this.#channels.has(sessionId);
  }

  /** Events received so far on this session's socket (all connections). */
  received(sessionId: string): number {
    return this.#channels.get(sessionId)?.received ?? 0;
  }

  /**
   * Creates the session's socket and starts accepting its runner. The directory exists once
   * `open` has returned its promise (before the socket does), so a container can be created
   * with it mounted while the socket is still being made. `fresh`: a new session, none of
   * whose runner's events can be stored yet (not one adopted after a restart).
   */
  async open(task: SessionTask, options: { fresh?: boolean } = {}): Promise<{ dir: string; socketPath: string }> {
    const { sessionId } = task;
    if (this.#channels.has(sessionId)) throw new IngestError(IngestErrorCode.ALREADY_OPEN, `ingest for ${sessionId} is already open`);
    const dir = this.dirFor(sessionId);
    const socketPath = join(dir, SOCKET_NAME);
    // synchronous metadata calls: this is on every session's start path, and each await on
    // the libuv pool lets unrelated work (other requests) run first
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    rmSync(socketPath, { force: true });
    const server = createServer({ allowHalfOpen: false });
    const channel: Channel = {
      task,
      dir,
      fresh: options.fresh === true,
      server,
      socket: undefined,
      chain: Promise.resolve(),
      open: undefined,
      pending: 0,
      idleWaiters: [],
      received: 0,
      bucket: new TokenBucket(this.#o.maxEventsPerSecond),
      extra: [],
      services: [],
      conns: new Set(),
      dials: new Map(),
    };
    server.on('connection', (socket) => this.#accept(channel, socket));
    // the other sockets first: a runner that sees ingest.sock finds those its hello names
    const services: Array<[ServiceName, (socket: Socket) => void]> = [['tunnel', (socket) => this.#tunnel(channel, socket)]];
    for (const [name, service] of Object.entries(this.#o.services ?? {}) as Array<[ServiceName, SessionService]>) {
      if (service.offers(task)) services.push([name, (socket) => service.accept(sessionId, socket)]);
    }
    try {
      for (const [name, onConnection] of services) {
        const path = join(dir, SERVICE_SOCKETS[name]);
        rmSync(path, { force: true });
        const extra = createServer({ allowHalfOpen: true });
        extra.on('connection', (socket) => {
          channel.conns.add(socket);
          socket.once('close', () => channel.conns.delete(socket));
          onConnection(socket);
        });
        channel.extra.push(extra);
        await listen(extra, path);
        grantToAgentUser(path, this.#o.containerUser, { ownedMode: 0o600, openMode: 0o666 });
        channel.services.push(name);
      }
      // bound under another name and renamed once only the runner may connect: a runner
      // already waiting for the socket (a warm-pool container) never finds it half-made
      const bindPath = join(dir, `.${SOCKET_NAME}.new`);
      rmSync(bindPath, { force: true });
      await listen(server, bindPath);
      // only the container's user may connect; a rootless server cannot chown, so it opens the mode instead
      grantToAgentUser(bindPath, this.#o.containerUser, { ownedMode: 0o600, openMode: 0o666 });
      renameSync(bindPath, socketPath);
    } catch (err) {
      // nothing half-open is left listening
      for (const s of [server, ...channel.extra]) if (s.listening) s.close();
      throw err;
    }
    this.#channels.set(sessionId, channel);
    this.#o.logger.debug({ sessionId, socketPath }, 'ingest socket open');
    return { dir, socketPath };
  }

  /** Resolves once every event received so far is stored and acknowledged, or after `timeoutMs`. */
  async settle(sessionId: string, timeoutMs: number): Promise<void> {
    const ch = this.#channels.get(sessionId);
    if (!ch) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      ch.chain,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /**
   * Waits until the runner's connection has closed and everything it sent is stored, or
   * `timeoutMs` passes. Used when a container exits, so its last events are not lost.
   */
  async drained(sessionId: string, timeoutMs: number): Promise<void> {
    const ch = this.#channels.get(sessionId);
    if (!ch) return;
    const deadline = Date.now() + timeoutMs;
    const socket = ch.socket;
    if (socket && !socket.destroyed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        socket.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    await this.settle(sessionId, Math.max(0, deadline - Date.now()));
  }

  /**
   * Stops accepting, lets stored work finish, and removes the socket directory. With
   * `keepDir` the directory stays: a running container has it mounted, and a later
   * process re-opens the socket in it (a new directory would not be seen by the mount).
   */
  async close(sessionId: string, options: { keepDir?: boolean } = {}): Promise<void> {
    const ch = this.#channels.get(sessionId);
    if (!ch) {
      // opened by an earlier process (a session adopted after a restart): still ours to clear
      if (!options.keepDir) await rm(this.dirFor(sessionId), { recursive: true, force: true });
      return;
    }
    this.#channels.delete(sessionId);
    ch.socket?.destroy();
    for (const dial of ch.dials.values()) {
      clearTimeout(dial.timer);
      dial.reject(new IngestError(IngestErrorCode.CLOSED, `the session ${sessionId} closed before the runner answered the dial`));
    }
    ch.dials.clear();
    for (const socket of ch.conns) socket.destroy();
    await Promise.all([ch.server, ...ch.extra].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    await ch.chain.catch(() => {});
    if (!options.keepDir) await rm(ch.dir, { recursive: true, force: true });
    else {
      // the runner waits for a new socket instead of dialling a dead one
      await rm(join(ch.dir, SOCKET_NAME), { force: true });
      for (const name of ch.services) await rm(join(ch.dir, SERVICE_SOCKETS[name]), { force: true });
    }
  }

  /**
   * Stores events the platform writes for a session (a model call, a refused connection) in
   * order with what its runner sends. Resolves false when the session's channel is closed: its
   * FINISH may be stored already, and nothing may follow it.
   */
  async record(sessionId: string, events: IngestedEvent[]): Promise<boolean> {
    const ch = this.#channels.get(sessionId);
    if (!ch) return false;
    // what the runner sends from now on is stored after these
    ch.open = undefined;
    const stored = ch.chain.then(() => this.#o.sink.append(sessionId, events));
    ch.chain = stored.catch((err: unknown) => this.#o.logger.error({ err, sessionId }, 'storing platform events failed'));
    await stored;
    return true;
  }

  /**
   * A stream to 127.0.0.1:`port` inside the session's container, through its runner: the
   * runner dials the port and connects back on tunnel.sock. The stream comes paused (nothing
   * read is lost before its consumer is there): pipe it or resume it. Rejects when the session
   * has no runner connected, the port refuses, or nothing came back within `dialTimeoutMs`.
   */
  dial(sessionId: string, port: number): Promise<Socket> {
    const ch = this.#channels.get(sessionId);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      return Promise.reject(new IngestError(IngestErrorCode.PROTOCOL, `port ${port} is not a TCP port`));
    }
    const socket = ch?.socket;
    if (!ch || !socket || socket.destroyed) {
      return Promise.reject(new IngestError(IngestErrorCode.CLOSED, `session ${sessionId} has no runner connected`));
    }
    const id = randomBytes(12).toString('hex');
    return new Promise<Socket>((resolve, reject) => {
      const timer = setTimeout(() => {
        ch.dials.delete(id);
        reject(new IngestError(IngestErrorCode.DIAL_FAILED, `the runner of ${sessionId} did not answer a dial of port ${port}`));
      }, this.#o.dialTimeoutMs);
      ch.dials.set(id, { resolve, reject, timer });
      const msg: DialMessage = { t: 'dial', id, port };
      socket.write(`${JSON.stringify(msg)}\n`);
    });
  }

  /** A runner answering a dial: one line naming it (or why it failed), then the stream. */
  #tunnel(ch: Channel, socket: Socket): void {
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const nl = head.indexOf(10);
      if (nl < 0) {
        if (head.length > 256) socket.destroy();
        return;
      }
      socket.off('data', onData);
      socket.pause();
      const [id = '', failure] = head.subarray(0, nl).toString('utf8').split(' !');
      const rest = head.subarray(nl + 1);
      const dial = ch.dials.get(id);
      if (!dial) return void socket.destroy();
      ch.dials.delete(id);
      clearTimeout(dial.timer);
      if (failure !== undefined) {
        socket.destroy();
        return dial.reject(new IngestError(IngestErrorCode.DIAL_FAILED, `the runner could not reach the port: ${failure.slice(0, 100)}`));
      }
      if (rest.length > 0) socket.unshift(rest);
      dial.resolve(socket);
    };
    socket.on('data', onData);
    socket.on('error', () => socket.destroy());
  }

  /** Closes every channel, keeping directories for the sessions' next owner (shutdown). */
  async closeAll(): Promise<void> {
    await Promise.all([...this.#channels.keys()].map((id) => this.close(id, { keepDir: true })));
  }

  /** The sessions that have a socket directory here, open or left by an earlier process. */
  dirs(): string[] {
    try {
      return readdirSync(this.#o.baseDir);
    } catch {
      return [];
    }
  }

  /** Removes a session's socket directory when no channel is open (recovery clean-up). */
  async removeDir(sessionId: string): Promise<void> {
    if (!this.#channels.has(sessionId)) await rm(this.dirFor(sessionId), { recursive: true, force: true });
  }

  /**
   * A runner's connection: hello, then lines framed, each read as an event (or the refusal
   * stored in its place), counted against the session's rate, batched and stored in order.
   */
  #accept(ch: Channel, socket: Socket): void {
    const { sessionId } = ch.task;
    const log = this.#o.logger.child({ sessionId });
    if (ch.socket && !ch.socket.destroyed) {
      log.info({}, 'runner reconnected; replacing the previous connection');
      ch.socket.destroy();
    }
    ch.socket = socket;
    ch.open = undefined;
    socket.setNoDelay(true);
    socket.on('error', (err) => log.debug({ err }, 'ingest connection error'));

    const send = (msg: object) => {
      if (!socket.destroyed) socket.write(`${JSON.stringify(msg)}\n`);
    };
    const hello = (lastRid: number): HelloMessage => ({
      t: 'hello',
      v: PROTOCOL_VERSION,
      task: ch.task,
      lastRid,
      maxEventBytes: this.#o.maxEventBytes,
      services: ch.services,
    });
    if (ch.fresh) {
      // the first connection of a session started here: no earlier connection sent anything,
      // so the task goes out at once, without a store read (it is on every start's path)
      ch.fresh = false;
      send(hello(0));
    } else {
      // hello after everything earlier connections sent is stored, so lastRid is exact
      ch.chain = ch.chain
        .then(async () => send(hello(await this.#o.sink.lastRid(sessionId))))
        .catch((err: unknown) => {
          log.error({ err }, 'ingest hello failed');
          socket.destroy();
        });
    }

    // a connection is paused while the store is behind or the session is over its rate
    const pausedBy = new Set<'store' | 'rate'>();
    const pause = (why: 'store' | 'rate') => {
      pausedBy.add(why);
      socket.pause();
    };
    const unpause = (why: 'store' | 'rate') => {
      pausedBy.delete(why);
      if (pausedBy.size === 0 && !socket.destroyed) socket.resume();
    };

    const batch = new Batcher<IngestedEvent>((events) => this.#deliver(ch, socket, events, log, { pause, unpause, send }));
    const throttle = new ConnectionThrottle(ch.bucket, {
      pause: () => pause('rate'),
      resume: () => unpause('rate'),
      throttled: () => batch.push(throttledEvent(ch.bucket.rate)),
    });
    socket.on('close', () => throttle.close());

    const framer = new LineFramer(
      this.#o.maxEventBytes + 1024,
      (line) => {
        if (line.length === 0) return;
        ch.received++;
        batch.push(parseEventLine(line, this.#o.maxEventBytes));
      },
      () => {
        ch.received++;
        batch.push(rejectedEvent(undefined, `an event line exceeded ${this.#o.maxEventBytes} bytes and was refused`));
      },
    );
    socket.on('data', (chunk: Buffer) => {
      const before = ch.received;
      framer.push(chunk.toString('utf8'));
      throttle.spend(ch.received - before);
      batch.schedule();
    });
    socket.on('end', () => batch.flush());
  }

  /**
   * Stores one batch after everything before it, then acks it on the connection it came from.
   * While the batch before it waits for the store, a new batch joins it instead (one write,
   * one ack). The connection is paused while more than `highWater` events wait to be stored.
   */
  #deliver(
    ch: Channel,
    socket: Socket,
    events: IngestedEvent[],
    log: Logger,
    conn: { pause(why: 'store'): void; unpause(why: 'store'): void; send(msg: object): void },
  ): void {
    ch.pending += events.length;
    if (ch.pending > this.#o.highWater) conn.pause('store');
    const open = ch.open;
    if (open && open.socket === socket) {
      for (const ev of events) open.events.push(ev);
      return;
    }
    const batch: QueuedBatch = { socket, events };
    ch.open = batch;
    ch.chain = ch.chain
      .then(() => {
        // from here on the batch is being stored: later events make a new one
        if (ch.open === batch) ch.open = undefined;
        return this.#store(ch, batch.events, log);
      })
      .then(
        (ackRid) => {
          if (ackRid > 0 && ch.socket === socket) conn.send({ t: 'ack', rid: ackRid });
        },
        (err: unknown) => {
          // nothing acked: the runner keeps the events and re-sends them on reconnect
          log.error({ err }, 'storing ingested events failed; closing the connection');
          socket.destroy();
        },
      )
      .finally(() => {
        ch.pending -= batch.events.length;
        if (ch.pending <= this.#o.highWater / 2) conn.unpause('store');
      });
  }

  /** Stores one batch in order; FINISH goes to the sink's finish. Returns the rid to ack. */
  async #store(ch: Channel, events: IngestedEvent[], log: Logger): Promise<number> {
    const { sessionId } = ch.task;
    let ackRid = 0;
    let run: IngestedEvent[] = [];
    const appendRun = async () => {
      if (run.length === 0) return;
      await this.#o.sink.append(sessionId, run);
      run = [];
    };
    for (const ev of events) {
      if (ev.type === 'FINISH') {
        await appendRun();
        await this.#o.sink.finish(sessionId, ev as IngestedEvent & { data: FinishData & Record<string, unknown> });
        log.debug({ rid: ev.rid }, 'agent FINISH received');
      } else {
        run.push(ev);
      }
      ackRid = Math.max(ackRid, ev.rid);
    }
    await appendRun();
    return ackRid;
  }
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
