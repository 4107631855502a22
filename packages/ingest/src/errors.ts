// the errors alone: the runner bundles this file, and the package's index would bring zod into its boot
import { CodedError } from '@mgx/config/errors';

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
