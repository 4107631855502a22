import { CodedError } from '@mgx/config';

/** Error codes of @mgx/preview, one table; each maps to one HTTP status (`httpStatusOf`). */
export const PreviewErrorCode = {
  /** No credentials, or a bad or expired signature. */
  UNAUTHORIZED: 'PREVIEW_UNAUTHORIZED',
  /** No such session for this caller (another tenant's looks the same). */
  NOT_FOUND: 'PREVIEW_NOT_FOUND',
  /** The port is outside MGX_PREVIEW_PORTS, or the address is malformed. */
  BAD_TARGET: 'PREVIEW_BAD_TARGET',
  /** The session is not running, so nothing can answer. */
  NOT_RUNNING: 'PREVIEW_NOT_RUNNING',
  /** The session's connection or byte allowance is used up. */
  LIMIT: 'PREVIEW_LIMIT',
  /** Nothing listens on the port inside the container, or the tunnel failed. */
  UNREACHABLE: 'PREVIEW_UNREACHABLE',
} as const;
export type PreviewErrorCode = (typeof PreviewErrorCode)[keyof typeof PreviewErrorCode];

export class PreviewError extends CodedError<PreviewErrorCode> {
  override readonly name = 'PreviewError';
}

const STATUS: Record<PreviewErrorCode, number> = {
  PREVIEW_UNAUTHORIZED: 401,
  PREVIEW_NOT_FOUND: 404,
  PREVIEW_BAD_TARGET: 400,
  PREVIEW_NOT_RUNNING: 409,
  PREVIEW_LIMIT: 429,
  PREVIEW_UNREACHABLE: 502,
};

export function httpStatusOf(code: PreviewErrorCode): number {
  return STATUS[code];
}
