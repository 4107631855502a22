import type { ResourceData, SessionUsage } from '@mgx/agent-sdk';
import type { SessionRecord } from '@mgx/event-store';

/** What clients see of a session. The prompt only in `get`; the tenant only for operators; secrets never. */
export interface SessionView {
  id: string;
  /** For operators, who see every tenant's sessions. */
  tenant?: string;
  status: SessionRecord['status'];
  framework: string;
  workspaceId: string;
  network: 'none' | 'egress';
  env: Record<string, string>;
  limits: {
    memoryBytes: number;
    cpuQuota: number;
    timeoutSeconds: number;
    idleTimeoutSeconds: number | null;
    maxModelTokens: number | null;
    maxModelCalls: number | null;
    /** Its MODEL_CALL events carry the calls' content. */
    recordModelContent: boolean;
    /** Domains its egress proxy reaches; null: no proxy. */
    egressAllow: string[] | null;
  };
  createdAt: number;
  startedAt: number | null;
  endedAt: number | null;
  deadlineAt: number | null;
  containerId: string | null;
  /** The worker that claimed the session (MGX_OWNER of its process); null while queued. */
  workerId: string | null;
  reason: SessionRecord['reason'];
  exitCode: number | null;
  message: string | null;
  lastSeq: number;
  promptPreview: string;
  prompt?: string;
  /** What the session used (FINISH's `usage`); null until FINISH, and for a session that never ran. */
  usage: SessionUsage | null;
}

export function toView(s: SessionRecord, withPrompt: boolean, withTenant = false): SessionView {
  return {
    id: s.id,
    ...(withTenant ? { tenant: s.tenant } : {}),
    status: s.status,
    framework: s.framework,
    workspaceId: s.workspaceId,
    network: s.network,
    env: s.env,
    limits: {
      memoryBytes: s.limits.memoryBytes,
      cpuQuota: s.limits.cpuQuota,
      timeoutSeconds: s.limits.timeoutMs / 1000,
      idleTimeoutSeconds: s.limits.idleTimeoutMs !== undefined ? s.limits.idleTimeoutMs / 1000 : null,
      maxModelTokens: s.limits.maxModelTokens ?? null,
      maxModelCalls: s.limits.maxModelCalls ?? null,
      recordModelContent: s.limits.recordModelContent === true,
      egressAllow: s.limits.egressAllow ?? null,
    },
    createdAt: s.createdAt,
    startedAt: s.startedAt,
    endedAt: s.endedAt,
    deadlineAt: s.deadlineAt,
    containerId: s.containerId,
    workerId: s.workerId,
    reason: s.reason,
    exitCode: s.exitCode,
    message: s.message,
    lastSeq: s.lastSeq,
    promptPreview: s.prompt.length > 120 ? `${s.prompt.slice(0, 120)}…` : s.prompt,
    ...(withPrompt ? { prompt: s.prompt } : {}),
    usage: s.usage ?? null,
  };
}

/** A running session as `sessions.top` shows it: its limits and its last resource sample. */
export interface TopRow {
  id: string;
  /** For operators. */
  tenant?: string;
  framework: string;
  startedAt: number | null;
  workerId: string | null;
  limits: { memoryBytes: number; cpus: number };
  /** The last RESOURCE event's data and when it was stored; null before the first sample. */
  resource: (ResourceData & { at: number }) | null;
}
