import { CodedError } from '@mgx/config';
import type { Store, WorkspaceRecord } from '@mgx/event-store';
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

export interface WorkspaceAccessDeps {
  store: Store;
  /** The workspaces on this host; absent in a process that runs no sessions (MGX_ROLE=api). */
  files: WorkspaceFiles | undefined;
  /** This process's worker id (MGX_OWNER). */
  workerId: string;
  /** MGX_WORKSPACES_SHARED: every worker mounts the same workspace root. */
  shared: boolean;
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
   * The files of a workspace the caller may change: its own (owned now if nobody did: files put
   * before any session), held by this host (which becomes its holder if none was), and with no
   * session active on it.
   */
  async writable(caller: Caller, id: string): Promise<{ ws: WorkspaceRecord; files: WorkspaceFiles }> {
    const existing = await this.#d.store.workspaces.get(id);
    const ws = existing ?? (await this.#d.store.workspaces.own(id, caller.tenant));
    if (ws.tenant !== caller.tenant && !caller.operator) {
      throw new WorkspaceAccessError(WorkspaceAccessErrorCode.NOT_FOUND, `workspace ${id} not found`);
    }
    const files = this.#local(ws);
    await this.idle(id);
    // seeded here before any session: later sessions on it must be claimed by this worker
    if (ws.holder === null && !this.#d.shared) {
      const holder = await this.#d.store.workspaces.hold(id, this.#d.workerId);
      if (holder !== this.#d.workerId) return { ws: { ...ws, holder }, files: this.#local({ ...ws, holder }) };
    }
    return { ws, files };
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
    if (active) {
      throw new WorkspaceAccessError(
        WorkspaceAccessErrorCode.BUSY,
        `workspace ${id} has an active session (${active.id}, ${active.status}): its files change only between sessions`,
      );
    }
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
