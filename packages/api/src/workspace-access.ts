import { randomUUID } from 'node:crypto';
import { CodedError, type Logger } from '@mgx/config';
import type { Store, WorkspaceRecord, WorkspaceSession } from '@mgx/event-store';
import type { WorkspaceFiles } from '@mgx/workspaces';
import type { Caller } from './auth.js';

export const WorkspaceAccessErrorCode = {
  /** No such workspace, or another tenant's (the same answer, as for sessions). */
  NOT_FOUND: 'WORKSPACE_NOT_FOUND',
  /** A session on the workspace is queued, starting or running: its files must not change. */
  BUSY: 'WORKSPACE_BUSY',
  /** Its files are on another worker's disk, or this process keeps no workspaces (an API node). */
  ELSEWHERE: 'WORKSPACE_ELSEWHERE',
} as const;
export type WorkspaceAccessErrorCode = (typeof WorkspaceAccessErrorCode)[keyof typeof WorkspaceAccessErrorCode];

export class WorkspaceAccessError extends CodedError<WorkspaceAccessErrorCode> {
  override readonly name = 'WorkspaceAccessError';
  /** ELSEWHERE: the worker that holds the files, when one does. */
  holder: string | undefined;
}

/** How long a write holds a workspace's queue without being renewed (a writer that died). */
const WRITE_LEASE_MS = 60_000;

const busy = (id: string, active: WorkspaceSession) =>
  new WorkspaceAccessError(
    WorkspaceAccessErrorCode.BUSY,
    `workspace ${id} has an active session (${active.id}, ${active.status}): its files change only between sessions`,
  );

export interface WorkspaceAccessDeps {
  store: Store;
  /** The workspaces on this host; absent in a process that runs no sessions (MGX_ROLE=api). */
  files: WorkspaceFiles | undefined;
  /** This process's worker id (MGX_OWNER). */
  workerId: string;
  /** MGX_WORKSPACES_SHARED: every worker mounts the same workspace root. */
  shared: boolean;
  /** A write ended: sessions queued behind it may be claimed now. */
  written?: (workspaceId: string) => void;
  logger?: Logger;
}

/**
 * Who may do what with a workspace, for the tRPC procedures and the HTTP file routes alike: a
 * tenant sees its own workspaces (an operator every one), files are served only by the worker
 * whose disk holds them, and nothing is written while a session is active on the workspace.
 */
export class WorkspaceAccess {
  readonly #d: WorkspaceAccessDeps;

  constructor(deps: WorkspaceAccessDeps) {
    this.#d = deps;
  }

  /** The workspace if the caller may see it, else NOT_FOUND (also for another tenant's). */
  async visible(caller: Caller, id: string): Promise<WorkspaceRecord> {
    const ws = await this.#d.store.workspaces.get(id);
    if (!ws || (ws.tenant !== caller.tenant && !caller.operator)) {
      throw new WorkspaceAccessError(WorkspaceAccessErrorCode.NOT_FOUND, `workspace ${id} not found`);
    }
    return ws;
  }

  /** The files of a workspace the caller may see, when this host holds them. */
  async readable(caller: Caller, id: string): Promise<{ ws: WorkspaceRecord; files: WorkspaceFiles }> {
    const ws = await this.visible(caller, id);
    return { ws, files: this.#local(ws) };
  }

  /**
   * Runs `fn` on the files of a workspace the caller may change: its own (owned now if nobody
   * did: files put before any session), held by this host (which becomes its holder if none
   * was), with no session active on it. While `fn` runs, a write is recorded in the store, so a
   * session created meanwhile stays queued until it ends (a claim skips the workspace).
   */
  async write<T>(caller: Caller, id: string, fn: (files: WorkspaceFiles, ws: WorkspaceRecord) => Promise<T>): Promise<T> {
    const { store } = this.#d;
    const existing = await store.workspaces.get(id);
    let ws = existing ?? (await store.workspaces.own(id, caller.tenant));
    if (ws.tenant !== caller.tenant && !caller.operator) {
      throw new WorkspaceAccessError(WorkspaceAccessErrorCode.NOT_FOUND, `workspace ${id} not found`);
    }
    this.#local(ws);
    // seeded here before any session: later sessions on it must be claimed by this worker
    if (ws.holder === null && !this.#d.shared) ws = { ...ws, holder: await store.workspaces.hold(id, this.#d.workerId) };
    const files = this.#local(ws);
    const token = randomUUID();
    const active = await store.workspaces.beginWrite(id, this.#d.workerId, token, Date.now() + WRITE_LEASE_MS);
    if (active) throw busy(id, active);
    // a long upload keeps its write alive; one whose process died lets the queue go after WRITE_LEASE_MS
    const renew = setInterval(() => {
      store.workspaces.renewWrite(id, token, Date.now() + WRITE_LEASE_MS).catch((err: unknown) => {
        this.#d.logger?.warn({ err, workspaceId: id }, 'cannot renew a write to a workspace');
      });
    }, WRITE_LEASE_MS / 3);
    renew.unref();
    try {
      return await fn(files, ws);
    } finally {
      clearInterval(renew);
      await store.workspaces.endWrite(id, token);
      this.#d.written?.(id);
    }
  }

  /**
   * Deletes a workspace the caller may see: its record (in one step with the check that no
   * session is active), then its files. Returns whether it had files here.
   */
  async remove(caller: Caller, id: string): Promise<boolean> {
    const { files } = await this.readable(caller, id);
    await this.idle(id);
    // false: a session arrived since (refused below) or another call removed it first (files go anyway)
    if (!(await this.#d.store.workspaces.remove(id))) await this.idle(id);
    return files.removeWorkspace(id);
  }

  /** Refuses with BUSY while a session on the workspace is not over. */
  async idle(id: string): Promise<void> {
    const active = await this.#d.store.workspaces.activeSession(id);
    if (active) throw busy(id, active);
  }

  /** Whether this host holds the workspace's files (without asking the disk). */
  isLocal(ws: WorkspaceRecord): boolean {
    return this.#d.files !== undefined && (this.#d.shared || ws.holder === null || ws.holder === this.#d.workerId);
  }

  #local(ws: WorkspaceRecord): WorkspaceFiles {
    const files = this.#d.files;
    const elsewhere = (message: string) => {
      const err = new WorkspaceAccessError(WorkspaceAccessErrorCode.ELSEWHERE, message);
      err.holder = ws.holder ?? undefined;
      return err;
    };
    if (!files) {
      throw elsewhere(
        `this server keeps no workspaces (MGX_ROLE=api): ask the worker that holds workspace ${ws.id}${ws.holder ? ` (${ws.holder})` : ''}`,
      );
    }
    if (!this.isLocal(ws)) {
      throw elsewhere(`workspace ${ws.id} is held by worker ${ws.holder ?? '?'}, not by this one (${this.#d.workerId}): ask that worker`);
    }
    return files;
  }
}
