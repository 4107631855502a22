import { join } from 'node:path';
import type { Logger, Settings } from '@mgx/config';
import { StoreError, StoreErrorCode } from './errors.js';
import type { Store } from './ports.js';
import { SqliteStore } from './sqlite-store.js';

export interface OpenStoreOptions {
  /** Where the store reports failures no caller sees (its retention timer, for one). */
  logger?: Logger;
}

/** Picks and opens the adapter the settings name. */
export async function openStore(settings: Pick<Settings, 'store'>, options: OpenStoreOptions = {}): Promise<Store> {
  const { store } = settings;
  if (store.kind === 'sqlite') {
    return SqliteStore.open({ file: join(store.dataDir, 'mgx.sqlite'), retentionDays: store.retentionDays, ...options });
  }
  if (store.kind === 'mongodb') {
    // loadSettings already requires MONGODB_URI for this kind; settings built by hand may not
    if (!store.mongodbUri) throw new StoreError(StoreErrorCode.UNAVAILABLE, 'MGX_EVENT_STORE=mongodb needs MONGODB_URI');
    // loaded here only: a SQLite process never loads the driver (~20 MB of resident memory)
    const { MongoStore } = await import('./mongodb-store.js');
    return MongoStore.open({ uri: store.mongodbUri, dbName: store.mongodbDb, retentionDays: store.retentionDays, ...options });
  }
  throw new StoreError(StoreErrorCode.UNAVAILABLE, `MGX_EVENT_STORE=${String(store.kind)} is not available in this build`);
}
