import { CodedError } from '@mgx/config';

export const IngestErrorCode = {
  ALREADY_OPEN: 'INGEST_ALREADY_OPEN',
  PROTOCOL: 'INGEST_PROTOCOL',
  CONNECT_TIMEOUT: 'INGEST_CONNECT_TIMEOUT',
  CLOSED: 'INGEST_CLOSED',
  DIAL_FAILED: 'INGEST_DIAL_FAILED',
} as const;
export type IngestErrorCode = (typeof IngestErrorCode)[keyof typeof IngestErrorCode];

export class IngestError extends CodedError<IngestErrorCode> {
  override readonly name = 'IngestError';
}
