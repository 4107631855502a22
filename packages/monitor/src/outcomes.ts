import type { FinishData, TerminalReason } from '@mgx/agent-sdk';
import type { Outcome, SessionRecord } from '@mgx/event-store';

/** Exit code of a process killed by SIGKILL (128 + 9), which is also what an OOM kill gives. */
export const SIGKILL_EXIT = 137;

/**
 * Turns the agent's FINISH into an outcome. An agent may only say succeeded or failed;
 * the platform's own states (timed_out, cancelled) are not the agent's to claim.
 */
export function outcomeFromAgentFinish(data: Record<string, unknown>): Outcome {
  const message = typeof data.message === 'string' ? data.message.slice(0, 4096) : undefined;
  if (data.status === 'succeeded') return { status: 'succeeded', reason: 'finished', ...(message ? { message } : {}) };
  return { status: 'failed', reason: 'agent_error', message: message ?? 'the agent reported failure' };
}

/**
 * How a container that exited before any other decision ended.
 *
 * OOM rule: the engine's OOMKilled flag when it sets it (Docker). Podman on cgroup v1 never
 * sets it, so exit 137 (SIGKILL) with a memory limit set and no kill sent by us also counts
 * as OOM: nothing else SIGKILLs an agent's init inside a locked-down container.
 */
export function outcomeFromExit(exit: { exitCode: number; oomKilled: boolean }, memoryLimited: boolean): Outcome {
  if (exit.oomKilled || (exit.exitCode === SIGKILL_EXIT && memoryLimited)) {
    return {
      status: 'failed',
      reason: 'oom_killed',
      exitCode: exit.exitCode,
      message: 'the agent exceeded its memory limit and was killed',
    };
  }
  return {
    status: 'failed',
    reason: 'exited_without_finish',
    exitCode: exit.exitCode,
    message: `the agent exited with code ${exit.exitCode} without reporting FINISH`,
  };
}

export function finishDataOf(o: Outcome): FinishData {
  return {
    status: o.status,
    reason: o.reason,
    ...(o.message !== undefined ? { message: o.message } : {}),
    ...(o.exitCode !== undefined ? { exitCode: o.exitCode } : {}),
  };
}

/** The outcome a decided session's row records, for whoever finishes it after the decider. */
export function outcomeOfRecord(s: Pick<SessionRecord, 'status' | 'reason' | 'message' | 'exitCode'>, fallback: TerminalReason): Outcome {
  return {
    status: s.status as Outcome['status'],
    reason: s.reason ?? fallback,
    ...(s.message !== null ? { message: s.message } : {}),
    ...(s.exitCode !== null ? { exitCode: s.exitCode } : {}),
  };
}
