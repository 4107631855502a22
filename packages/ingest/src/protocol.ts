import type { AgentEventType } from '@mgx/agent-sdk';

/**
 * The ingest protocol: NDJSON over the session's unix socket, one JSON object per line.
 *
 * server → runner
 *   {"t":"hello","v":1,"task":{...},"lastRid":N,"maxEventBytes":B}  on every connection
 *   {"t":"ack","rid":N}        every event with rid ≤ N is stored (or deliberately refused)
 *   {"t":"error","message":"…"}  the runner did something wrong; the server closes
 * runner → server
 *   {"t":"ev","rid":N,"type":"MESSAGE","ts":1700000000000,"data":{…}}
 *
 * rid increases by one per event from 1. A runner re-sends everything after the
 * server's lastRid when it reconnects; the store skips what it already holds.
 *
 * More sockets beside ingest.sock, each with one purpose, so no stream needs a header: the
 * socket a connection arrives on says what it is for and, like ingest.sock, whose it is.
 * The hello names those the session has (`services`); a runner of a server without them sees
 * none and goes on as before.
 *   tunnel.sock  host → container streams. The server sends {"t":"dial","id":"…","port":N} on
 *                the ingest connection; the runner connects to 127.0.0.1:N inside the container,
 *                then to tunnel.sock, writes one line `<id>\n` and pipes the two together. When
 *                it cannot reach the port it writes `<id> !<code>\n` instead and closes.
 *   model.sock   HTTP: an OpenAI-compatible chat-completions gateway (the host adds the key).
 *   proxy.sock   HTTP CONNECT proxy for the session's allow-listed domains.
 */
export const PROTOCOL_VERSION = 1;

/** What the runner is asked to do. Sent over the socket, never through env or labels. */
export interface SessionTask {
  sessionId: string;
  framework: string;
  prompt: string;
  options: Record<string, unknown>;
  /** Environment for the agent's own processes (allow-listed by the API). */
  env: Record<string, string>;
  secrets: Record<string, string>;
}

export interface HelloMessage {
  t: 'hello';
  v: number;
  task: SessionTask;
  lastRid: number;
  maxEventBytes: number;
  /** Sockets besides ingest.sock in the session's directory (SERVICE_SOCKETS); absent from older servers. */
  services?: ServiceName[];
}

/** A host → container stream: connect to 127.0.0.1:port and answer on tunnel.sock with `id`. */
export interface DialMessage {
  t: 'dial';
  id: string;
  port: number;
}

export interface AckMessage {
  t: 'ack';
  rid: number;
}

export interface ErrorMessage {
  t: 'error';
  message: string;
}

export type ServerMessage = HelloMessage | AckMessage | ErrorMessage | DialMessage;

export interface EventMessage {
  t: 'ev';
  rid: number;
  type: AgentEventType;
  ts: number;
  data: Record<string, unknown>;
}

/** Where the socket lives inside the container (its directory is bind-mounted read-only). */
export const CONTAINER_SOCKET_DIR = '/run/mgx';
export const SOCKET_NAME = 'ingest.sock';

/** The sockets a session's directory may hold besides ingest.sock, by service. */
export const SERVICE_SOCKETS = { tunnel: 'tunnel.sock', model: 'model.sock', proxy: 'proxy.sock' } as const;
export type ServiceName = keyof typeof SERVICE_SOCKETS;
