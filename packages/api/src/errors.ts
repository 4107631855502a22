import { TRPCError } from '@trpc/server';
import { StoreError, StoreErrorCode } from '@mgx/event-store';
import { RuntimeError, RuntimeErrorCode } from '@mgx/runtime';
import { FilesError, FilesErrorCode } from '@mgx/workspaces';
import { WorkspaceAccessError, WorkspaceAccessErrorCode } from './workspace-access.js';

type TrpcCode = TRPCError['code'];

/** What a client sees of the store's failures. */
const STORE_CODES: Record<StoreErrorCode, TrpcCode> = {
  [StoreErrorCode.SESSION_NOT_FOUND]: 'NOT_FOUND',
  [StoreErrorCode.SESSION_EXISTS]: 'CONFLICT',
  // FINISH before the decision: a bug on our side, not the caller's
  [StoreErrorCode.NOT_DECIDED]: 'INTERNAL_SERVER_ERROR',
  [StoreErrorCode.UNAVAILABLE]: 'SERVICE_UNAVAILABLE',
  [StoreErrorCode.INVALID_CURSOR]: 'BAD_REQUEST',
  [StoreErrorCode.WORKER_NOT_FOUND]: 'NOT_FOUND',
  // a drain asked of a worker that is dead or stopped
  [StoreErrorCode.WORKER_NOT_LIVE]: 'BAD_REQUEST',
};

/** What a client sees of the container engine's failures: the engine is this server's upstream. */
const RUNTIME_CODES: Record<RuntimeErrorCode, TrpcCode> = {
  [RuntimeErrorCode.ENGINE_UNAVAILABLE]: 'SERVICE_UNAVAILABLE',
  [RuntimeErrorCode.NO_SOCKET]: 'SERVICE_UNAVAILABLE',
  [RuntimeErrorCode.IMAGE_NOT_FOUND]: 'SERVICE_UNAVAILABLE',
  [RuntimeErrorCode.ENGINE_TIMEOUT]: 'GATEWAY_TIMEOUT',
  [RuntimeErrorCode.ENGINE_REJECTED]: 'BAD_GATEWAY',
  [RuntimeErrorCode.CONTAINER_NOT_FOUND]: 'NOT_FOUND',
  [RuntimeErrorCode.NAME_CONFLICT]: 'CONFLICT',
};

/** What a client sees of the files API's refusals. */
const FILES_CODES: Record<FilesErrorCode, TrpcCode> = {
  [FilesErrorCode.INVALID_PATH]: 'BAD_REQUEST',
  [FilesErrorCode.NOT_FOUND]: 'NOT_FOUND',
  [FilesErrorCode.WRONG_TYPE]: 'BAD_REQUEST',
  // a link, a FIFO, a hardlinked file: there, but not served
  [FilesErrorCode.REFUSED]: 'FORBIDDEN',
  [FilesErrorCode.TOO_LARGE]: 'PAYLOAD_TOO_LARGE',
  [FilesErrorCode.QUOTA_EXCEEDED]: 'PAYLOAD_TOO_LARGE',
  [FilesErrorCode.BAD_ARCHIVE]: 'BAD_REQUEST',
  [FilesErrorCode.BAD_RANGE]: 'BAD_REQUEST',
  [FilesErrorCode.NOT_EMPTY]: 'CONFLICT',
};

const WORKSPACE_CODES: Record<WorkspaceAccessErrorCode, TrpcCode> = {
  [WorkspaceAccessErrorCode.NOT_FOUND]: 'NOT_FOUND',
  [WorkspaceAccessErrorCode.BUSY]: 'CONFLICT',
  // tRPC has no 421: the message names the worker that holds the files
  [WorkspaceAccessErrorCode.ELSEWHERE]: 'SERVICE_UNAVAILABLE',
};

/** The tRPC code for a StoreError, RuntimeError, FilesError or WorkspaceAccessError; undefined for anything else. */
export function trpcCodeOf(err: unknown): TrpcCode | undefined {
  if (err instanceof StoreError) return STORE_CODES[err.code];
  if (err instanceof RuntimeError) return RUNTIME_CODES[err.code];
  if (err instanceof FilesError) return FILES_CODES[err.code];
  if (err instanceof WorkspaceAccessError) return WORKSPACE_CODES[err.code];
  return undefined;
}

/** A StoreError or RuntimeError as the TRPCError the client should see; undefined for anything else. */
export function toTRPCError(err: unknown): TRPCError | undefined {
  const code = trpcCodeOf(err);
  if (code === undefined || !(err instanceof Error)) return undefined;
  return new TRPCError({ code, message: err.message, cause: err });
}
