import { MongoServerError, type ClientSession, type Collection, type Filter } from 'mongodb';
import { TERMINAL_STATUSES, type SessionStatus } from '@mgx/agent-sdk';
import { decodeCursor } from './cursor.js';
import { StoreError, StoreErrorCode } from './errors.js';
import type { WorkspacePage, WorkspaceQuery, WorkspaceRecord, WorkspaceSession, WorkspaceStore } from './ports.js';

/** A workspace's owner: `_id` is the workspace id; `pos` orders listings, newest first. */
export interface WorkspaceOwnerDoc {
  _id: string;
  tenant: string;
  createdAt: number;
  pos: number;
}

/** What this adapter reads of the sessions and holders collections (their adapter owns them). */
export interface WorkspaceSessionDoc {
  _id: string;
  tenant: string;
  workspaceId: string;
  status: SessionStatus;
  createdAt: number;
  pos: number;
  workerId: string | null;
  finishSeq: number | null;
}
/**
 * A workspace's holder: the worker whose claim first used it (its files are on that worker's
 * host). `activeSessionId` is the session claimed on it, the lock that keeps one session at a
 * time per workspace; it is cleared when that session leaves starting or running.
 */
export interface WorkspaceHolderDoc {
  _id: string;
  holder: string;
  tenant: string;
  lastSessionId: string;
  activeSessionId: string | null;
  claimedAt: number;
  /** Writes to its files under way (uploads, deletes): a claim skips it until they end or expire. */
  writes?: WorkspaceWrite[];
}

export interface WorkspaceWrite {
  token: string;
  until: number;
}

/** A holder document with no write under way at `now`: what a claim's compare-and-set requires. */
export const noWriteAt = (now: number): Filter<WorkspaceHolderDoc> => ({ writes: { $not: { $elemMatch: { until: { $gt: now } } } } });

export interface MongoWorkspacesDeps {
  owners: Collection<WorkspaceOwnerDoc>;
  sessions: Collection<WorkspaceSessionDoc>;
  holders: Collection<WorkspaceHolderDoc>;
  guard: <T>(what: string, fn: () => Promise<T>) => Promise<T>;
  atomically: <T>(fn: (session: ClientSession | undefined) => Promise<T>) => Promise<T>;
  /** The next listing position (a counter shared with the sessions' order). */
  nextPos: () => Promise<number>;
}

const isDuplicateKey = (err: unknown): boolean => err instanceof MongoServerError && err.code === 11000;

/** Queued, starting, running, or decided with FINISH not stored (its container is being torn down). */
const ACTIVE: Filter<WorkspaceSessionDoc> = {
  $or: [{ status: { $nin: [...TERMINAL_STATUSES] } }, { workerId: { $ne: null }, finishSeq: null }],
};

/**
 * Ownership of workspaces in `workspace_owners`, one document per workspace written once with
 * $setOnInsert: two tenants racing for a new workspace get the same owner back.
 */
export class MongoWorkspaces implements WorkspaceStore {
  readonly #d: MongoWorkspacesDeps;

  constructor(deps: MongoWorkspacesDeps) {
    this.#d = deps;
  }

  async own(id: string, tenant: string, now = Date.now()): Promise<WorkspaceRecord> {
    return this.#d.guard('workspaces.own', async () => {
      const found = await this.get(id);
      if (found) return found;
      // used before ownership was recorded: its first session's tenant owns it
      const first = await this.#d.sessions.find({ workspaceId: id }, { projection: { tenant: 1 }, sort: { pos: 1 }, limit: 1 }).next();
      const pos = await this.#d.nextPos();
      try {
        await this.#d.owners.updateOne(
          { _id: id },
          { $setOnInsert: { tenant: first?.tenant ?? tenant, createdAt: now, pos } },
          { upsert: true },
        );
      } catch (err) {
        // two upserts of a new workspace at once: the other one inserted it
        if (!isDuplicateKey(err)) throw err;
      }
      const owned = await this.get(id);
      if (!owned) throw new StoreError(StoreErrorCode.UNAVAILABLE, `workspace ${id} vanished while it was owned`);
      return owned;
    });
  }

  async get(id: string): Promise<WorkspaceRecord | null> {
    return this.#d.guard('workspaces.get', async () => {
      const doc = await this.#d.owners.findOne({ _id: id });
      if (!doc) return null;
      const holder = await this.#d.holders.findOne({ _id: id }, { projection: { holder: 1 } });
      return { id, tenant: doc.tenant, createdAt: doc.createdAt, holder: holder?.holder ?? null };
    });
  }

  async list(q: WorkspaceQuery): Promise<WorkspacePage> {
    return this.#d.guard('workspaces.list', async () => {
      const filter: Filter<WorkspaceOwnerDoc> = { pos: { $lt: decodeCursor(q.cursor) } };
      if (q.tenant !== undefined) filter.tenant = q.tenant;
      const docs = await this.#d.owners
        .find(filter)
        .sort({ pos: -1 })
        .limit(q.limit + 1)
        .toArray();
      const page = docs.slice(0, q.limit);
      const ids = page.map((d) => d._id);
      const holders = new Map(
        (await this.#d.holders.find({ _id: { $in: ids } }, { projection: { holder: 1 } }).toArray()).map((h) => [h._id, h.holder]),
      );
      const items = await Promise.all(
        page.map(async (d) => {
          const last = await this.#d.sessions
            .find({ workspaceId: d._id }, { projection: { status: 1, createdAt: 1 }, sort: { pos: -1 }, limit: 1 })
            .next();
          return {
            id: d._id,
            tenant: d.tenant,
            createdAt: d.createdAt,
            holder: holders.get(d._id) ?? null,
            lastSession: last ? { id: last._id, status: last.status, createdAt: last.createdAt } : null,
          };
        }),
      );
      const lastDoc = page.at(-1);
      return { items, nextCursor: docs.length > q.limit && lastDoc ? String(lastDoc.pos) : null };
    });
  }

  async activeSession(id: string): Promise<WorkspaceSession | null> {
    return this.#d.guard('workspaces.activeSession', async () => {
      const s = await this.#d.sessions
        .find({ workspaceId: id, ...ACTIVE }, { projection: { status: 1, createdAt: 1 }, sort: { pos: 1 }, limit: 1 })
        .next();
      return s ? { id: s._id, status: s.status, createdAt: s.createdAt } : null;
    });
  }

  async hold(id: string, workerId: string, now = Date.now()): Promise<string> {
    return this.#d.guard('workspaces.hold', async () => {
      const owner = await this.#d.owners.findOne({ _id: id }, { projection: { tenant: 1 } });
      try {
        // the shape the claim expects: no session on it yet, no lock taken
        await this.#d.holders.updateOne(
          { _id: id },
          { $setOnInsert: { holder: workerId, tenant: owner?.tenant ?? '', lastSessionId: '', activeSessionId: null, claimedAt: now } },
          { upsert: true },
        );
      } catch (err) {
        if (!isDuplicateKey(err)) throw err;
      }
      return (await this.#d.holders.findOne({ _id: id }, { projection: { holder: 1 } }))?.holder ?? workerId;
    });
  }

  async beginWrite(id: string, workerId: string, token: string, until: number, now = Date.now()): Promise<WorkspaceSession | null> {
    return this.#d.guard('workspaces.beginWrite', async () => {
      await this.hold(id, workerId, now);
      // the write goes on the holder document, which a claim changes by compare-and-set: of the
      // two, the one that comes second fails (the claim sees the write, or this sees its lock)
      for (let attempt = 0; attempt < 5; attempt++) {
        const active = await this.activeSession(id);
        if (active) return active;
        const current = await this.#d.holders.findOne({ _id: id }, { projection: { activeSessionId: 1 } });
        const set = await this.#d.holders.updateOne(
          { _id: id, activeSessionId: current?.activeSessionId ?? null },
          { $push: { writes: { token, until } } },
        );
        if (set.matchedCount === 0) continue;
        // a session claimed between the check and the write (its lock unchanged: taken on a new document)
        const after = await this.activeSession(id);
        if (after && after.status !== 'queued') {
          await this.endWrite(id, token);
          return after;
        }
        await this.#d.holders.updateOne({ _id: id }, { $pull: { writes: { until: { $lte: now } } } });
        return null;
      }
      throw new StoreError(
        StoreErrorCode.UNAVAILABLE,
        `workspace ${id}: a write could not be recorded beside the claims that kept changing it`,
      );
    });
  }

  async renewWrite(id: string, token: string, until: number, now = Date.now()): Promise<boolean> {
    return this.#d.guard('workspaces.renewWrite', async () => {
      const r = await this.#d.holders.updateOne(
        { _id: id, writes: { $elemMatch: { token, until: { $gt: now } } } },
        { $set: { 'writes.$.until': until } },
      );
      return r.matchedCount === 1;
    });
  }

  async endWrite(id: string, token: string): Promise<void> {
    await this.#d.guard('workspaces.endWrite', () => this.#d.holders.updateOne({ _id: id }, { $pull: { writes: { token } } }));
  }

  async remove(id: string): Promise<boolean> {
    return this.#d.guard('workspaces.remove', () =>
      // in one transaction where the deployment has them; without, a session created between the
      // check and the delete finds the workspace gone and owns it anew
      this.#d.atomically(async (session) => {
        const opt = session ? { session } : {};
        if (await this.#d.sessions.findOne({ workspaceId: id, ...ACTIVE }, { projection: { _id: 1 }, ...opt })) return false;
        const removed = (await this.#d.owners.deleteOne({ _id: id }, opt)).deletedCount === 1;
        await this.#d.holders.deleteOne({ _id: id, activeSessionId: null }, opt);
        return removed;
      }),
    );
  }
}
