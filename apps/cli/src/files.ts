import { createReadStream, createWriteStream, mkdirSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebStream } from 'node:stream/web';
import { createGunzip, createGzip } from 'node:zlib';
import tarFs from 'tar-fs';
import { UsageError } from './run-input.js';

/** One side of `mgx cp`: `ID:path` in a workspace, or a local path. */
export type CpSide = { workspaceId: string; path: string } | { local: string };

/** `ID:path` names a workspace path (a local path with a colon is written `./a:b`). */
export function parseCpSide(arg: string): CpSide {
  const m = /^([A-Za-z0-9][A-Za-z0-9_-]{0,63}):(.*)$/s.exec(arg);
  if (!m) return { local: arg };
  return { workspaceId: m[1] ?? '', path: (m[2] ?? '').replace(/^\/+/, '') };
}

/** A failed answer of the files routes: the server's message, and whether it was the caller's fault. */
export class FilesHttpError extends Error {
  override readonly name = 'FilesHttpError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
  /** 4xx: the request was refused (exit 2); anything else is the server's (exit 5). */
  get refused(): boolean {
    return this.status >= 400 && this.status < 500;
  }
}

export interface FilesHttp {
  url: string;
  token: string | undefined;
}

const encodePath = (path: string) => path.split('/').map(encodeURIComponent).join('/');

async function call(http: FilesHttp, method: string, path: string, body?: Readable): Promise<Response> {
  const res = await fetch(`${http.url.replace(/\/$/, '')}${path}`, {
    method,
    headers: http.token ? { authorization: `Bearer ${http.token}` } : {},
    ...(body ? { body: Readable.toWeb(body), duplex: 'half' } : {}),
  } as RequestInit);
  if (res.ok) return res;
  const answer = (await res.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
  throw new FilesHttpError(res.status, answer?.error?.code ?? String(res.status), answer?.error?.message ?? `HTTP ${res.status}`);
}

/**
 * Copies a workspace path to a local one: a file as it is (to `dest`, or into it when `dest` is a
 * directory; `-` is stdout), a directory (or the whole workspace) unpacked from its archive into
 * `dest`. Returns what it wrote, for the message.
 */
export async function copyFrom(
  http: FilesHttp,
  from: { workspaceId: string; path: string },
  dest: string,
  skipped: (link: string) => void = () => undefined,
): Promise<string> {
  const id = encodeURIComponent(from.workspaceId);
  const isDir = from.path === '' || from.path.endsWith('/');
  if (!isDir) {
    try {
      const res = await call(http, 'GET', `/workspaces/${id}/files/${encodePath(from.path)}`);
      const body = Readable.fromWeb(res.body as WebStream);
      if (dest === '-') {
        await pipeline(body, process.stdout, { end: false });
        return 'stdout';
      }
      const target = isDirectory(dest) ? join(dest, basename(from.path)) : dest;
      await pipeline(body, createWriteStream(target));
      return target;
    } catch (err) {
      // a directory: fetched as an archive below
      if (!(err instanceof FilesHttpError && err.code === 'FILES_WRONG_TYPE')) throw err;
    }
  }
  if (dest === '-') throw new UsageError(`${from.workspaceId}:${from.path} is a directory: give a local directory to copy it into`);
  const query = from.path.replace(/\/$/, '') === '' ? '' : `?path=${encodeURIComponent(from.path.replace(/\/$/, ''))}`;
  const res = await call(http, 'GET', `/workspaces/${id}/archive.tar.gz${query}`);
  mkdirSync(dest, { recursive: true });
  // tar-fs refuses entries that would land outside dest, through `..` or a link written before
  // them; a link that points outside dest (the agent's /etc/passwd) is left out, and said so
  const root = resolve(dest);
  const outside = (name: string, target: string) => {
    const to = resolve(dirname(name), target);
    return isAbsolute(target) || (to !== root && !to.startsWith(`${root}${sep}`));
  };
  await pipeline(
    Readable.fromWeb(res.body as WebStream),
    createGunzip(),
    tarFs.extract(dest, {
      dmode: 0o755,
      fmode: 0o644,
      // tar-fs passes the entry's path joined to dest (relative to the working directory)
      ignore: (name, header) => {
        const h = header as { type?: string; linkname?: string } | undefined;
        const target = h?.linkname ?? '';
        if (h?.type !== 'symlink' || !outside(resolve(name), target)) return false;
        skipped(`${relative(root, resolve(name))} -> ${target}`);
        return true;
      },
    }),
  );
  return dest;
}

/**
 * Copies a local file or directory into a workspace: a file with PUT (into `to.path` when that
 * ends with `/` or is empty), a directory as a tar.gz upload under `to.path`.
 */
export async function copyTo(
  http: FilesHttp,
  src: string,
  to: { workspaceId: string; path: string },
): Promise<{ path: string; detail: string }> {
  const id = encodeURIComponent(to.workspaceId);
  let st;
  try {
    st = statSync(src);
  } catch {
    throw new UsageError(`${src}: no such file or directory`);
  }
  if (st.isDirectory()) {
    const base = to.path.replace(/\/$/, '');
    const query = base === '' ? '' : `?path=${encodeURIComponent(base)}`;
    // links are packed as links, not followed
    const res = await call(http, 'PUT', `/workspaces/${id}/archive.tar.gz${query}`, tarFs.pack(src).pipe(createGzip()));
    const r = (await res.json()) as { files: number; directories: number; symlinks: number; bytes: number };
    return { path: base, detail: `${r.files} files, ${r.directories} directories, ${r.symlinks} symlinks, ${r.bytes} bytes` };
  }
  if (!st.isFile()) throw new UsageError(`${src} is neither a file nor a directory`);
  const path = to.path === '' || to.path.endsWith('/') ? `${to.path}${basename(src)}` : to.path;
  const res = await call(http, 'PUT', `/workspaces/${id}/files/${encodePath(path)}`, createReadStream(src));
  const r = (await res.json()) as { size: number };
  return { path, detail: `${r.size} bytes` };
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** `mgx files` lines: type, size, modification time, path (and a link's target). */
export function formatEntries(
  entries: Array<{ path: string; type: string; size: number; mtime: number; target?: string; links?: number }>,
): string[] {
  const TYPE: Record<string, string> = { file: '-', directory: 'd', symlink: 'l', other: '?' };
  return entries.map((e) => {
    const when = new Date(e.mtime).toISOString().replace('T', ' ').slice(0, 19);
    const name = e.type === 'directory' ? `${e.path}/` : e.path;
    const extra = e.target !== undefined ? ` -> ${e.target}` : e.links !== undefined ? ` (${e.links} hard links: not served)` : '';
    return `${TYPE[e.type] ?? '?'} ${String(e.size).padStart(10)}  ${when}  ${name}${extra}`;
  });
}
