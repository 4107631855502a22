import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { getHTTPStatusCodeFromError } from '@trpc/server/http';
import { toTRPCError, WorkspaceAccessError, WorkspaceAccessErrorCode, type Caller, type TokenAuth, type WorkspaceAccess } from '@mgx/api';
import type { Logger } from '@mgx/config';
import type { WorkerStore } from '@mgx/event-store';
import { checkWorkspaceId, FilesError, FilesErrorCode, joinNames, namesFromUrl } from '@mgx/workspaces';
import { FORWARDED, forwardToWorker, workerFor } from './worker-forward.js';

export interface FilesHttpDeps {
  auth: TokenAuth;
  access: WorkspaceAccess;
  /** Where the worker holding a workspace advertises its URL (MGX_WORKER_URL). */
  workers: WorkerStore;
  /** This process's id, named in the header of what it forwards. */
  self: string;
  logger: Logger;
}

/** A refusal as the HTTP status and JSON body a client gets. */
class HttpRefusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function statusOf(err: unknown): { status: number; code: string; message: string } | undefined {
  if (err instanceof HttpRefusal) return { status: err.status, code: err.code, message: err.message };
  // 421 Misdirected Request: this server does not hold the files (tRPC has no such code)
  if (err instanceof WorkspaceAccessError && err.code === WorkspaceAccessErrorCode.ELSEWHERE)
    return { status: 421, code: err.code, message: err.message };
  const mapped = toTRPCError(err);
  if (!mapped) return undefined;
  return { status: getHTTPStatusCodeFromError(mapped), code: (err as FilesError).code, message: mapped.message };
}

/** The single byte range of a Range header within `size`; null: serve it whole; throws 416. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null {
  if (header === undefined) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  // several ranges, or another unit: the whole file, as RFC 9110 allows
  if (!m) return null;
  const [, from = '', to = ''] = m;
  let start: number;
  let end: number;
  if (from === '') {
    // the last N bytes
    if (to === '') return null;
    start = Math.max(0, size - Number(to));
    end = size - 1;
  } else {
    start = Number(from);
    end = to === '' ? size - 1 : Math.min(Number(to), size - 1);
  }
  if (start >= size || start > end || (from === '' && Number(to) === 0)) {
    throw new HttpRefusal(416, FilesErrorCode.BAD_RANGE, `range ${header} is outside the file (${size} bytes)`);
  }
  return { start, end };
}

const yes = (v: string | null) => v === '1' || v === 'true';

/**
 * The workspace file routes, with the same bearer tokens as the API:
 * GET|HEAD|PUT|DELETE /workspaces/<id>/files/<path>, GET|PUT /workspaces/<id>/archive.tar.gz[?path=],
 * DELETE /workspaces/<id>. Returns false for a URL that is not one of them.
 */
export function filesRoutes({ auth, access, workers, self, logger }: FilesHttpDeps) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<boolean> => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const rawPath = q < 0 ? url : url.slice(0, q);
    if (!rawPath.startsWith('/workspaces/')) return false;
    const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
    // split before decoding: an encoded slash or dot-dot stays inside one component and is refused there
    const [, , rawId = '', kind, ...rest] = rawPath.split('/');
    const method = req.method ?? 'GET';
    try {
      const caller = auth.callerOf(req.headers.authorization);
      if (!caller) throw new HttpRefusal(401, 'UNAUTHORIZED', 'missing or unknown bearer token');
      const id = checkWorkspaceId(decodeId(rawId));
      if (kind === undefined || (kind === '' && rest.length === 0)) {
        if (method !== 'DELETE') throw new HttpRefusal(405, 'METHOD_NOT_SUPPORTED', 'DELETE /workspaces/<id> deletes a workspace');
        const files = await access.remove(caller, id);
        logger.info({ workspaceId: id, tenant: caller.tenant }, 'workspace removed');
        return json(res, 200, { workspaceId: id, removed: true, files });
      }
      if (kind === 'archive.tar.gz' && rest.length === 0) {
        const path = query.get('path') ?? '';
        if (method === 'GET' || method === 'HEAD') return await sendArchive(access, caller, id, path, req, res);
        if (method === 'PUT' || method === 'POST') {
          const result = await access.write(caller, id, (files) => files.upload(id, path, req));
          logger.info({ workspaceId: id, tenant: caller.tenant, ...result }, 'workspace upload');
          return json(res, 200, { workspaceId: id, ...result });
        }
        throw new HttpRefusal(405, 'METHOD_NOT_SUPPORTED', 'GET or PUT /workspaces/<id>/archive.tar.gz');
      }
      if (kind !== 'files') throw new HttpRefusal(404, 'NOT_FOUND', 'not found');
      // a trailing slash leaves one empty segment: the directory itself
      const names = namesFromUrl(rest.at(-1) === '' ? rest.slice(0, -1) : rest);
      const path = joinNames(names);
      if (method === 'GET' || method === 'HEAD') return await sendFile(access, caller, id, path, req, res);
      if (method === 'PUT') {
        const written = await access.write(caller, id, (files) => {
          const declared = Number(req.headers['content-length'] ?? 0);
          if (declared > files.limits.maxFileBytes)
            throw new FilesError(
              FilesErrorCode.TOO_LARGE,
              `${path} is larger than ${files.limits.maxFileBytes} bytes (MGX_MAX_FILE_BYTES)`,
            );
          return files.writeFile(id, path, req);
        });
        return json(res, 201, { workspaceId: id, ...written });
      }
      if (method === 'DELETE') {
        const removed = await access.write(caller, id, (files) => files.remove(id, path, { recursive: yes(query.get('recursive')) }));
        return json(res, 200, { workspaceId: id, ...removed });
      }
      throw new HttpRefusal(405, 'METHOD_NOT_SUPPORTED', `${method} is not supported here`);
    } catch (err) {
      // another worker's files (or a new workspace, on a node that keeps none): carried to the
      // worker that holds them, or takes them, when it advertises a URL (nothing of the body was read yet)
      if (err instanceof WorkspaceAccessError && err.code === WorkspaceAccessErrorCode.ELSEWHERE && !req.headers[FORWARDED]) {
        const { worker, why } = await workerFor(workers, err.holder ?? null);
        if (worker?.url) {
          logger.debug({ url: req.url, worker: worker.id }, 'forwarding a workspace request to its worker');
          await forwardToWorker(req, res, worker.url, {
            self,
            unreachable: (r, e) =>
              json(r, 502, { error: { code: 'BAD_GATEWAY', message: `the worker holding the files did not answer: ${e.message}` } }),
          });
          return true;
        }
        err.message += ` (${why})`;
      }
      const refusal = statusOf(err);
      if (!refusal) throw err;
      if (refusal.status === 401) res.setHeader('www-authenticate', 'Bearer');
      // a body the client is still sending is not read: close the connection after the answer
      if (!req.complete) res.setHeader('connection', 'close');
      if (res.headersSent) {
        res.destroy(err as Error);
        return true;
      }
      return json(res, refusal.status, { error: { code: refusal.code, message: refusal.message } });
    }
  };
}

/** A client that went away mid-response is not an error of the server. */
function unlessGone(err: unknown): void {
  if ((err as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE') throw err;
}

function decodeId(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new FilesError(FilesErrorCode.INVALID_PATH, 'the workspace id is not valid percent-encoding');
  }
}

function json(res: ServerResponse, status: number, body: unknown): true {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
  return true;
}

/**
 * Headers of everything served from a workspace: the agent wrote it, so a browser must neither
 * guess its type nor run it with this origin's rights.
 */
const UNTRUSTED = {
  'x-content-type-options': 'nosniff',
  'content-security-policy': "sandbox; default-src 'none'",
  'cache-control': 'private, no-cache',
};

async function sendFile(access: WorkspaceAccess, caller: Caller, id: string, path: string, req: IncomingMessage, res: ServerResponse) {
  const { files } = await access.readable(caller, id);
  const file = await files.openFile(id, path);
  try {
    const range = parseRange(req.headers.range, file.size);
    const start = range?.start ?? 0;
    const end = range?.end ?? file.size - 1;
    const name = path.split('/').at(-1) ?? path;
    res.writeHead(range ? 206 : 200, {
      ...UNTRUSTED,
      'content-type': file.contentType,
      'content-length': String(Math.max(0, end - start + 1)),
      'accept-ranges': 'bytes',
      'last-modified': new Date(file.mtime).toUTCString(),
      ...(range ? { 'content-range': `bytes ${start}-${end}/${file.size}` } : {}),
      ...(req.url?.includes('download=1') ? { 'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(name)}` } : {}),
    });
    if (req.method === 'HEAD' || file.size === 0) {
      res.end();
      return true;
    }
    // exactly the bytes announced, even if the file grows meanwhile
    await pipeline(file.fh.createReadStream({ start, end, autoClose: false }), res).catch(unlessGone);
    return true;
  } finally {
    await file.fh.close();
  }
}

async function sendArchive(access: WorkspaceAccess, caller: Caller, id: string, path: string, req: IncomingMessage, res: ServerResponse) {
  const { files } = await access.readable(caller, id);
  const archive = await files.archive(id, path);
  const name = path === '' ? id : `${id}-${path.replaceAll('/', '_')}`;
  res.writeHead(200, {
    ...UNTRUSTED,
    'content-type': 'application/gzip',
    'content-disposition': `attachment; filename="${name}.tar.gz"`,
  });
  if (req.method === 'HEAD') {
    archive.destroy();
    res.end();
    return true;
  }
  // a client that goes away ends the walk (the pipeline destroys the archive stream)
  await pipeline(archive, res).catch(unlessGone);
  return true;
}
