import { CodedError } from '@mgx/config';

export const StoreErrorCode = {
  SESSION_NOT_FOUND: 'STORE_SESSION_NOT_FOUND',
  SESSION_EXISTS: 'STORE_SESSION_EXISTS',
  NOT_DECIDED: 'STORE_NOT_DECIDED',
  UNAVAILABLE: 'STORE_UNAVAILABLE',
  INVALID_CURSOR: 'STORE_INVALID_CURSOR',
  WORKER_NOT_FOUND: 'STORE_WORKER_NOT_FOUND',
  /** The worker is dead or stopped: a request that needs it running cannot be made. */
  WORKER_NOT_LIVE: 'STORE_WORKER_NOT_LIVE',
} as const;
export type StoreErrorCode = (typeof StoreErrorCode)[keyof typeof StoreErrorCode];

export class StoreError extends CodedError<StoreErrorCode> {
  override readonly name = 'StoreError';
}
