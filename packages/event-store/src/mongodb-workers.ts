import type { Collection } from 'mongodb';
import { StoreError, StoreErrorCode } from './errors.js';
import type { HeartbeatResult, RegisterResult, WorkerInfo, WorkerRecord, WorkerState, WorkerStore } from './ports.js';

/**
 * A worker as stored: its id is the document's _id. `claims` counts its claims: each claim
 * under a lease writes it, so the claim's transaction conflicts with a markDead or registration.
 */
export interface WorkerDoc extends Omit<WorkerRecord, 'id' | 'drainRequested' | 'url'> {
  _id: string;
  claims?: number;
  /** Absent in documents written before drains could be requested. */
  drainRequested?: boolean;
  /** null when the worker advertises no URL (a $set cannot leave an old one behind). */
  url?: string | null;
}

const toWorker = ({ _id, claims: _claims, drainRequested, url, ...rest }: WorkerDoc): WorkerRecord => ({
  id: _id,
  ...rest,
  drainRequested: drainRequested === true,
  ...(url ? { url } : {}),
});
const LIVE: WorkerState[] = ['alive', 'draining'];

/**
 * Workers and their leases in the `workers` collection. Every change is one single-document
 * update whose filter is the compare-and-set (epoch, state, lease), atomic without transactions.
 */
export class MongoWorkers implements WorkerStore {
  readonly #c: Collection<WorkerDoc>;
  readonly #guard: <T>(what: string, fn: () => Promise<T>) => Promise<T>;

  constructor(collection: Collection<WorkerDoc>, guard: <T>(what: string, fn: () => Promise<T>) => Promise<T>) {
    this.#c = collection;
    this.#guard = guard;
  }

  async register(info: WorkerInfo, leaseMs: number, now = Date.now()): Promise<RegisterResult> {
    return this.#guard('registerWorker', async () => {
      const { id, url, ...fields } = info;
      const before = await this.#c.findOneAndUpdate(
        { _id: id },
        {
          $set: {
            ...fields,
            ...(url !== undefined ? { url } : {}),
            state: 'alive',
            inUse: 0,
            startedAt: now,
            heartbeatAt: now,
            leaseUntil: now + leaseMs,
            drainRequested: false,
          },
          // a worker that no longer advertises a URL loses the old one
          ...(url === undefined ? { $unset: { url: '' } } : {}),
          $inc: { epoch: 1 },
        },
        { upsert: true, returnDocument: 'before' },
      );
      const after = await this.#c.findOne({ _id: id });
      if (!after) throw new StoreError(StoreErrorCode.UNAVAILABLE, `worker ${id} was not stored`);
      return { worker: toWorker(after), previous: before ? toWorker(before) : null };
    });
  }

  async heartbeat(
    id: string,
    epoch: number,
    update: { inUse: number; state: 'alive' | 'draining' },
    leaseMs: number,
    now = Date.now(),
  ): Promise<HeartbeatResult> {
    return this.#guard('heartbeat', async () => {
      const after = await this.#c.findOneAndUpdate(
        { _id: id, epoch, state: { $in: LIVE } },
        { $set: { heartbeatAt: now, leaseUntil: now + leaseMs, inUse: update.inUse, state: update.state } },
        { returnDocument: 'after', projection: { drainRequested: 1 } },
      );
      return { kept: after !== null, drainRequested: after?.drainRequested === true };
    });
  }

  async requestDrain(id: string): Promise<WorkerRecord> {
    return this.#guard('requestDrain', async () => {
      const after = await this.#c.findOneAndUpdate(
        { _id: id, state: { $in: LIVE } },
        { $set: { drainRequested: true } },
        { returnDocument: 'after' },
      );
      if (after) return toWorker(after);
      const current = await this.#c.findOne({ _id: id });
      if (!current) throw new StoreError(StoreErrorCode.WORKER_NOT_FOUND, `worker ${id} does not exist`);
      throw new StoreError(StoreErrorCode.WORKER_NOT_LIVE, `worker ${id} is ${current.state}: there is nothing to drain`);
    });
  }

  async get(id: string): Promise<WorkerRecord | null> {
    return this.#guard('getWorker', async () => {
      const doc = await this.#c.findOne({ _id: id });
      return doc ? toWorker(doc) : null;
    });
  }

  async list(): Promise<WorkerRecord[]> {
    return this.#guard('listWorkers', async () => (await this.#c.find({}).sort({ _id: 1 }).toArray()).map(toWorker));
  }

  async markDead(id: string, now = Date.now()): Promise<boolean> {
    return this.#guard('markDead', async () => {
      const res = await this.#c.updateOne({ _id: id, state: { $in: LIVE }, leaseUntil: { $lt: now } }, { $set: { state: 'dead' } });
      return res.modifiedCount === 1;
    });
  }

  async deregister(id: string, epoch: number): Promise<void> {
    await this.#guard('deregister', async () => {
      await this.#c.updateOne({ _id: id, epoch }, { $set: { state: 'stopped', leaseUntil: Date.now(), inUse: 0 } });
    });
  }
}
