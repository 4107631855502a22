import { join } from 'node:path';
import type { Settings } from '@mgx/config';
import { StoreError, StoreErrorCode } from './errors.js';
import type { Store } from './ports.js';
import { SqliteStore } from './sqlite-store.js';

/** Picks and opens the adapter the settings name. */
export async function openStore(settings: Pick<Settings, 'store'>): Promise<Store> {
  const { store } = settings;
  if (store.kind === 'sqlite') return SqliteStore.open({ file: join(store.dataDir, 'mgx.sqlite') });
  throw new StoreError(StoreErrorCode.UNAVAILABLE, `MGX_EVENT_STORE=${store.kind} is not available in this build`);
}
