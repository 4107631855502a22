import { join } from 'node:path';
import type { Settings } from '@mgx/config';
import { StoreError, StoreErrorCode } from './errors.js';
import { MongoStore } from './mongodb-store.js';
import type { Store } from './ports.js';
import { SqliteStore } from './sqlite-store.js';

/** Picks and opens the adapter the settings name. */
export async function openStore(settings: Pick<Settings, 'store'>): Promise<Store> {
  const { store } = settings;
  if (store.kind === 'sqlite') {
    return SqliteStore.open({ file: join(store.dataDir, 'mgx.sqlite'), retentionDays: store.retentionDays });
  }
  if (store.kind === 'mongodb') {
    // loadSettings already requires MONGODB_URI for this kind; settings built by hand may not
    if (!store.mongodbUri) throw new StoreError(StoreErrorCode.UNAVAILABLE, 'MGX_EVENT_STORE=mongodb needs MONGODB_URI');
    return MongoStore.open({ uri: store.mongodbUri, dbName: store.mongodbDb, retentionDays: store.retentionDays });
  }
  throw new StoreError(StoreErrorCode.UNAVAILABLE, `MGX_EVENT_STORE=${String(store.kind)} is not available in this build`);
}
