export {
  PLATFORM_EVENT_TYPES,
  AGENT_EVENT_TYPES,
  EVENT_TYPES,
  SESSION_STATUSES,
  TERMINAL_STATUSES,
  TERMINAL_REASONS,
  isAgentEventType,
  isTerminal,
  WARNING_KINDS,
} from './events.js';
export type {
  EventType,
  AgentEventType,
  PlatformEventType,
  SessionStatus,
  TerminalStatus,
  TerminalReason,
  FinishData,
  SessionUsage,
  ModelUsage,
  ModelCallData,
  ResourceData,
  WarningData,
  WarningKind,
  MessageData,
  LogData,
  SessionEvent,
} from './events.js';
export { ExitWithoutFinish, FrameworkRegistry } from './framework.js';
export { REDACTED, redactor } from './redact.js';
export type { Redactor, StreamRedactor } from './redact.js';
export type { Framework, FrameworkContext, FrameworkResult, Emitter, GatewayEndpoints } from './framework.js';
