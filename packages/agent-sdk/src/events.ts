/** Events written by the platform itself. */
export const PLATFORM_EVENT_TYPES = [
  'SESSION_QUEUED',
  'CONTAINER_STARTED',
  'CONTAINER_EXITED',
  'TIMEOUT',
  'CANCELLED',
  /** One call through the model gateway (ModelCallData); never its content. */
  'MODEL_CALL',
  /** A connection the egress proxy refused: its host is not on the session's allow-list. */
  'EGRESS_DENIED',
  /** A sample of the container's CPU, memory and pids (ResourceData), when it changed materially. */
  'RESOURCE',
  /** Something the operator should know while the session runs (WarningData): it goes on. */
  'WARNING',
] as const;

/** Events an agent emits through the runner. FINISH is always the last event of a session. */
export const AGENT_EVENT_TYPES = ['START', 'MESSAGE', 'TOOL_CALL', 'TOOL_RESULT', 'LOG', 'FILE_CHANGED', 'ERROR', 'FINISH'] as const;

export type PlatformEventType = (typeof PLATFORM_EVENT_TYPES)[number];
export type AgentEventType = (typeof AGENT_EVENT_TYPES)[number];
export type EventType = PlatformEventType | AgentEventType;

export const EVENT_TYPES: readonly EventType[] = [...PLATFORM_EVENT_TYPES, ...AGENT_EVENT_TYPES];

export function isAgentEventType(type: string): type is AgentEventType {
  return (AGENT_EVENT_TYPES as readonly string[]).includes(type);
}

export const SESSION_STATUSES = ['queued', 'starting', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled'] as const;
export type SessionStatus = (typeof SESSION_STATUSES)[number];

export const TERMINAL_STATUSES = ['succeeded', 'failed', 'timed_out', 'cancelled'] as const;
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];

export function isTerminal(status: SessionStatus): status is TerminalStatus {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

/** Why a session ended. Every terminal state carries exactly one. */
export const TERMINAL_REASONS = [
  'finished',
  'agent_error',
  'exited_without_finish',
  'oom_killed',
  'timeout',
  'cancelled',
  'runtime_error',
  'lost',
  'workspace_unavailable',
  /** A model call went past the session's maxModelTokens or maxModelCalls and was refused. */
  'budget_exceeded',
] as const;
export type TerminalReason = (typeof TERMINAL_REASONS)[number];

/** The payload of FINISH. */
export interface FinishData {
  status: TerminalStatus;
  reason: TerminalReason;
  message?: string;
  exitCode?: number;
  /** When the agent sent its FINISH (ms since the epoch), if the agent's FINISH decided. */
  reportedAt?: number;
  /** What the session used (set by the platform, never by the agent). */
  usage?: SessionUsage;
}

/** Token totals of a session's model calls through the gateway. */
export interface ModelUsage {
  calls: number;
  promptTokens: number;
  completionTokens: number;
  /** Calls refused (budget, unknown model). */
  refused: number;
}

/** The payload of MODEL_CALL. */
export interface ModelCallData {
  provider: string;
  model: string;
  /** ok: answered; error: the provider failed or answered an error; refused: not sent (budget, model). */
  status: 'ok' | 'error' | 'refused';
  /** The HTTP status the agent got. */
  httpStatus: number;
  promptTokens: number;
  completionTokens: number;
  latencyMs: number;
  stream: boolean;
  /** Why it was refused or failed. */
  message?: string;
  /** Only when the session asked (recordModelContent): the request's messages and tools, clipped. */
  request?: { messages: unknown; tools?: unknown; truncated: boolean };
  /** Only when the session asked: the answer's text and tool calls, clipped. */
  response?: { content: string; toolCalls?: unknown; truncated: boolean };
  /** The session's totals with this call: what a worker that takes the session over starts from. */
  total?: ModelUsage;
}

/**
 * What a session used, in FINISH and on the session: its container's resources (the monitor's
 * meter), and `model` when it called models through the gateway. An open record.
 */
export interface SessionUsage {
  /** CPU time of the container, user and system, in seconds. */
  cpuSeconds: number;
  /** Highest memory the container used; its limit when it was OOM-killed. */
  memoryPeakBytes: number;
  /** Memory over time (sampled memory × time), in GiB-seconds: what a tenant is billed for. */
  memoryGiBSeconds: number;
  pidsPeak: number;
  /** From the container's start to its exit. */
  wallMs: number;
  /** Token totals of its model calls through the gateway, when it made any. */
  model?: ModelUsage;
  [extra: string]: unknown;
}

/** The payload of RESOURCE: one sample of a running container. */
export interface ResourceData {
  /** Share of the session's CPU quota used since the previous sample, 0-100 (or more, briefly). */
  cpuPercent: number;
  /** CPU time used since the container started, in seconds. */
  cpuSeconds: number;
  memoryBytes: number;
  memoryLimitBytes: number;
  pids: number;
}

export const WARNING_KINDS = ['memory_near_limit', 'cpu_saturated'] as const;
export type WarningKind = (typeof WARNING_KINDS)[number];

/** The payload of WARNING. Each kind is raised at most once per session. */
export interface WarningData {
  kind: WarningKind;
  message: string;
  [detail: string]: unknown;
}

/** The payload of a MESSAGE: a streamed chunk (`delta`) or the final text (`done`). */
export interface MessageData {
  messageId: string;
  role: 'assistant' | 'user' | 'system';
  delta?: string;
  text?: string;
  done?: boolean;
}

export interface LogData {
  stream: 'stdout' | 'stderr' | 'agent';
  text: string;
  level?: 'debug' | 'info' | 'warn' | 'error';
}

/** One stored event of a session, in the order the store assigned (`seq`, dense from 1). */
export interface SessionEvent {
  sessionId: string;
  seq: number;
  type: EventType;
  /** Milliseconds since the epoch when the event was created. */
  ts: number;
  data: Record<string, unknown>;
}
