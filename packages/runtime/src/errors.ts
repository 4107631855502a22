import { CodedError } from '@mgx/config';

export const RuntimeErrorCode = {
  /** No engine answers on the socket (refused, missing, reset). Transient. */
  ENGINE_UNAVAILABLE: 'RUNTIME_ENGINE_UNAVAILABLE',
  /** The engine did not answer in time. Transient. */
  ENGINE_TIMEOUT: 'RUNTIME_ENGINE_TIMEOUT',
  IMAGE_NOT_FOUND: 'RUNTIME_IMAGE_NOT_FOUND',
  CONTAINER_NOT_FOUND: 'RUNTIME_CONTAINER_NOT_FOUND',
  NAME_CONFLICT: 'RUNTIME_NAME_CONFLICT',
  /** The engine refused the request (bad option, resource limit). */
  ENGINE_REJECTED: 'RUNTIME_ENGINE_REJECTED',
  NO_SOCKET: 'RUNTIME_NO_SOCKET',
} as const;
export type RuntimeErrorCode = (typeof RuntimeErrorCode)[keyof typeof RuntimeErrorCode];

const TRANSIENT: ReadonlySet<RuntimeErrorCode> = new Set([RuntimeErrorCode.ENGINE_UNAVAILABLE, RuntimeErrorCode.ENGINE_TIMEOUT]);

export class RuntimeError extends CodedError<RuntimeErrorCode> {
  override readonly name = 'RuntimeError';
  constructor(
    code: RuntimeErrorCode,
    message: string,
    readonly op: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }

  /** Worth retrying with backoff: the engine may come back. */
  get transient(): boolean {
    return TRANSIENT.has(this.code);
  }

  /** The request never reached the engine (nothing listening), so even a create can be retried. */
  get unsent(): boolean {
    const sys = (this.cause as { code?: string } | undefined)?.code;
    return sys === 'ECONNREFUSED' || sys === 'ENOENT';
  }
}

/** Maps a dockerode/docker-modem failure to a RuntimeError with a code. */
export function classifyEngineError(op: string, cause: unknown, subject?: string): RuntimeError {
  if (cause instanceof RuntimeError) return cause;
  const err = cause as { statusCode?: number; code?: string; message?: string; json?: { message?: string } };
  const detail = err.json?.message ?? err.message ?? String(cause);
  const sys = err.code ?? '';
  if (['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE', 'EACCES'].includes(sys)) {
    return new RuntimeError(RuntimeErrorCode.ENGINE_UNAVAILABLE, `container engine unavailable during ${op}: ${detail}`, op, { cause });
  }
  if (sys === 'ETIMEDOUT' || (/timeout/i.test(detail) && err.statusCode === undefined)) {
    return new RuntimeError(RuntimeErrorCode.ENGINE_TIMEOUT, `container engine timed out during ${op}: ${detail}`, op, { cause });
  }
  if (err.statusCode === 404) {
    if (op === 'create' || /image/i.test(detail)) {
      return new RuntimeError(
        RuntimeErrorCode.IMAGE_NOT_FOUND,
        `image ${subject ?? ''} not found: build it with \`npx nx run runner:build-agent\` (${detail})`,
        op,
        { cause },
      );
    }
    return new RuntimeError(RuntimeErrorCode.CONTAINER_NOT_FOUND, `container ${subject ?? ''} not found during ${op}`, op, { cause });
  }
  if (err.statusCode === 409) {
    return new RuntimeError(RuntimeErrorCode.NAME_CONFLICT, `conflict during ${op}: ${detail}`, op, { cause });
  }
  if (err.statusCode !== undefined && err.statusCode >= 500 && /no such image|image not known/i.test(detail)) {
    return new RuntimeError(
      RuntimeErrorCode.IMAGE_NOT_FOUND,
      `image ${subject ?? ''} not found: build it with \`npx nx run runner:build-agent\` (${detail})`,
      op,
      { cause },
    );
  }
  // Podman answers 500 for a container being removed at that moment ("does not exist in database")
  if (err.statusCode !== undefined && err.statusCode >= 500 && /no such container/i.test(detail)) {
    return new RuntimeError(RuntimeErrorCode.CONTAINER_NOT_FOUND, `container ${subject ?? ''} not found during ${op}`, op, { cause });
  }
  return new RuntimeError(RuntimeErrorCode.ENGINE_REJECTED, `container engine refused ${op}: ${detail}`, op, { cause });
}
