import type Database from 'better-sqlite3';
import { TERMINAL_STATUSES, type SessionStatus } from '@mgx/agent-sdk';
import { decodeCursor } from './cursor.js';
import { StoreError, StoreErrorCode } from './errors.js';
import type { WorkspacePage, WorkspaceQuery, WorkspaceRecord, WorkspaceSession, WorkspaceStore } from './ports.js';

/**
 * Who owns each workspace. A table of its own: the `workspaces` table says which worker holds
 * one and loses its row when a claim is given back, while ownership stays for good.
 */
export const WORKSPACE_OWNERS_SCHEMA = `
CREATE TABLE IF NOT EXISTS workspace_owners (
  pos INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS workspace_owners_tenant ON workspace_owners (tenant, pos);
-- writes to a workspace's files under way: a claim skips the workspace until they end or expire
CREATE TABLE IF NOT EXISTS workspace_writes (
  token TEXT PRIMARY KEY,
  workspace_id TEXT NOT NULL,
  until INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS workspace_writes_workspace ON workspace_writes (workspace_id, until);
-- a workspace's sessions: its last one, and whether one is active
CREATE INDEX IF NOT EXISTS sessions_workspace_pos ON sessions (workspace_id, pos);
`;

/**
 * Creates the owners table. Once, when it is new: workspaces used before ownership was recorded
 * belong to the tenant of their first session (later, a removed workspace stays removed).
 */
export function migrateWorkspaceOwners(db: Database.Database): void {
  const existed = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'workspace_owners'").get() !== undefined;
  db.exec(WORKSPACE_OWNERS_SCHEMA);
  if (existed) return;
  db.exec(`INSERT OR IGNORE INTO workspace_owners (id, tenant, created_at)
    SELECT workspace_id, tenant, created_at FROM sessions s WHERE pos = (SELECT MIN(pos) FROM sessions f WHERE f.workspace_id = s.workspace_id)`);
}

const TERMINAL_SQL = `(${TERMINAL_STATUSES.map((s) => `'${s}'`).join(',')})`;
/** Queued, starting, running, or decided with FINISH not stored (its container is being torn down). */
const ACTIVE_SQL = `(status NOT IN ${TERMINAL_SQL} OR (worker_id IS NOT NULL AND finish_seq IS NULL))`;

interface OwnerRow {
  pos: number;
  id: string;
  tenant: string;
  created_at: number;
  holder: string | null;
  last_id: string | null;
  last_status: SessionStatus | null;
  last_created_at: number | null;
}

const toRecord = (r: OwnerRow): WorkspaceRecord => ({ id: r.id, tenant: r.tenant, createdAt: r.created_at, holder: r.holder });

const SELECT_OWNER = `SELECT o.pos, o.id, o.tenant, o.created_at, w.holder,
    l.id AS last_id, l.status AS last_status, l.created_at AS last_created_at
  FROM workspace_owners o
  LEFT JOIN workspaces w ON w.id = o.id
  LEFT JOIN sessions l ON l.pos = (SELECT MAX(pos) FROM sessions WHERE workspace_id = o.id)`;

export class SqliteWorkspaces implements WorkspaceStore {
  readonly #call: <T>(what: string, fn: () => T) => T;
  readonly #tx: <T>(what: string, fn: () => T) => T;
  readonly #stmts;

  constructor(deps: { db: Database.Database; call: <T>(what: string, fn: () => T) => T; tx: <T>(what: string, fn: () => T) => T }) {
    const { db } = deps;
    this.#call = deps.call;
    this.#tx = deps.tx;
    this.#stmts = {
      own: db.prepare('INSERT INTO workspace_owners (id, tenant, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING'),
      get: db.prepare<[string], OwnerRow>(`${SELECT_OWNER} WHERE o.id = ?`),
      firstTenant: db.prepare<[string], { tenant: string }>('SELECT tenant FROM sessions WHERE workspace_id = ? ORDER BY pos LIMIT 1'),
      listAll: db.prepare<[number, number], OwnerRow>(`${SELECT_OWNER} WHERE o.pos < ? ORDER BY o.pos DESC LIMIT ?`),
      listTenant: db.prepare<[number, string, number], OwnerRow>(
        `${SELECT_OWNER} WHERE o.pos < ? AND o.tenant = ? ORDER BY o.pos DESC LIMIT ?`,
      ),
      active: db.prepare<[string], WorkspaceSession>(
        `SELECT id, status, created_at AS createdAt FROM sessions WHERE workspace_id = ? AND ${ACTIVE_SQL} ORDER BY pos LIMIT 1`,
      ),
      hold: db.prepare(
        `INSERT INTO workspaces (id, holder, tenant, last_session_id, claimed_at) VALUES (@id, @holder, @tenant, NULL, @now)
         ON CONFLICT (id) DO NOTHING`,
      ),
      holder: db.prepare<[string], { holder: string }>('SELECT holder FROM workspaces WHERE id = ?'),
      beginWrite: db.prepare('INSERT INTO workspace_writes (token, workspace_id, until) VALUES (?, ?, ?)'),
      expiredWrites: db.prepare('DELETE FROM workspace_writes WHERE until <= ?'),
      renewWrite: db.prepare('UPDATE workspace_writes SET until = ? WHERE token = ? AND workspace_id = ? AND until > ?'),
      endWrite: db.prepare('DELETE FROM workspace_writes WHERE token = ? AND workspace_id = ?'),
      removeOwner: db.prepare('DELETE FROM workspace_owners WHERE id = ?'),
      removeHolder: db.prepare('DELETE FROM workspaces WHERE id = ?'),
    };
  }

  async own(id: string, tenant: string, now = Date.now()): Promise<WorkspaceRecord> {
    return this.#tx('workspaces.own', () => {
      // used before ownership was recorded (by a session created without own): its first session's tenant owns it
      const first = this.#stmts.firstTenant.get(id)?.tenant;
      this.#stmts.own.run(id, first ?? tenant, now);
      const row = this.#stmts.get.get(id);
      // inserted or kept in this transaction
      if (!row) throw new StoreError(StoreErrorCode.UNAVAILABLE, `workspace ${id} vanished while it was owned`);
      return toRecord(row);
    });
  }

  async get(id: string): Promise<WorkspaceRecord | null> {
    const row = this.#call('workspaces.get', () => this.#stmts.get.get(id));
    return row ? toRecord(row) : null;
  }

  async list(q: WorkspaceQuery): Promise<WorkspacePage> {
    const before = decodeCursor(q.cursor);
    const rows = this.#call('workspaces.list', () =>
      q.tenant !== undefined ? this.#stmts.listTenant.all(before, q.tenant, q.limit + 1) : this.#stmts.listAll.all(before, q.limit + 1),
    );
    const page = rows.slice(0, q.limit);
    const last = page.at(-1);
    return {
      items: page.map((r) => ({
        ...toRecord(r),
        lastSession:
          r.last_id !== null && r.last_status !== null ? { id: r.last_id, status: r.last_status, createdAt: r.last_created_at ?? 0 } : null,
      })),
      nextCursor: rows.length > q.limit && last ? String(last.pos) : null,
    };
  }

  async activeSession(id: string): Promise<WorkspaceSession | null> {
    return this.#call('workspaces.activeSession', () => this.#stmts.active.get(id) ?? null);
  }

  async hold(id: string, workerId: string, now = Date.now()): Promise<string> {
    return this.#tx('workspaces.hold', () => {
      const tenant = this.#stmts.get.get(id)?.tenant ?? null;
      this.#stmts.hold.run({ id, holder: workerId, tenant, now });
      return this.#stmts.holder.get(id)?.holder ?? workerId;
    });
  }

  async beginWrite(id: string, _workerId: string, token: string, until: number, now = Date.now()): Promise<WorkspaceSession | null> {
    // the claim runs in a transaction on the same file: it sees the write or the write sees its session
    return this.#tx('workspaces.beginWrite', () => {
      const active = this.#stmts.active.get(id);
      if (active) return active;
      this.#stmts.expiredWrites.run(now);
      this.#stmts.beginWrite.run(token, id, until);
      return null;
    });
  }

  async renewWrite(id: string, token: string, until: number, now = Date.now()): Promise<boolean> {
    return this.#call('workspaces.renewWrite', () => this.#stmts.renewWrite.run(until, token, id, now).changes === 1);
  }

  async endWrite(id: string, token: string): Promise<void> {
    this.#call('workspaces.endWrite', () => this.#stmts.endWrite.run(token, id));
  }

  async remove(id: string): Promise<boolean> {
    return this.#tx('workspaces.remove', () => {
      if (this.#stmts.active.get(id)) return false;
      const removed = this.#stmts.removeOwner.run(id).changes === 1;
      this.#stmts.removeHolder.run(id);
      return removed;
    });
  }
}
