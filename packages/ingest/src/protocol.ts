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
}

export interface AckMessage {
  t: 'ack';
  rid: number;
}

export interface ErrorMessage {
  t: 'error';
  message: string;
}

export type ServerMessage = HelloMessage | AckMessage | ErrorMessage;

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
