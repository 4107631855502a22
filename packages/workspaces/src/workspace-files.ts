import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import { open, opendir, rename, rm, rmdir, symlink, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { finished, PassThrough, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { lookup } from 'mime-types';
import tar from 'tar-stream';
import { parseUser } from '@mgx/config';
import { FilesError, FilesErrorCode } from './errors.js';
import { checkWorkspaceId, comparePaths, joinNames, MAX_DEPTH, parsePath } from './paths.js';
import {
  at,
  CREATE_FLAGS,
  DIR_FLAGS,
  fsError,
  lstatAt,
  mkdirAt,
  openDirAt,
  openFileAt,
  readlinkAt,
  typeOf,
  type EntryType,
} from './safe-fs.js';

/** The limits of the files API (settings MGX_MAX_FILE_BYTES and the rest). */
export interface FileLimits {
  /** The largest file a PUT or an upload's entry may write. */
  maxFileBytes: number;
  /** The most bytes one tar.gz upload may write (uncompressed). */
  maxUploadBytes: number;
  /** The most entries one tar.gz upload may hold. */
  maxUploadFiles: number;
  /** The most bytes of regular files a workspace may hold after a write; 0: no quota. */
  quotaBytes: number;
  /** The most bytes one `read` returns. */
  maxReadBytes: number;
}

export interface FileEntry {
  /** Relative to the workspace root. */
  path: string;
  name: string;
  type: EntryType;
  /** Bytes (of the link itself for a symlink). */
  size: number;
  /** Last modification, ms since the epoch. */
  mtime: number;
  /** Where a symlink points, as the agent wrote it (never followed). */
  target?: string;
  /** Hard links of a regular file, when more than one (such a file is not served). */
  links?: number;
}

export interface ListOptions {
  recursive?: boolean;
  limit: number;
  /** The `nextCursor` of the previous page: the path after which to go on. */
  cursor?: string;
}

export interface ReadResult {
  path: string;
  size: number;
  offset: number;
  /** Bytes returned. */
  length: number;
  /** `utf8` when the bytes are text, else `base64`. */
  encoding: 'utf8' | 'base64';
  content: string;
  /** Bytes after the returned ones. */
  remaining: number;
}

export interface OpenedFile {
  fh: FileHandle;
  path: string;
  size: number;
  mtime: number;
  contentType: string;
}

export interface Usage {
  bytes: number;
  files: number;
  directories: number;
}

export interface WriteResult {
  path: string;
  size: number;
}

export interface UploadResult {
  files: number;
  directories: number;
  symlinks: number;
  bytes: number;
}

/** An entry of a walk with the open directory it is in (valid until the walk goes on). */
interface Located {
  entry: FileEntry;
  dir: FileHandle;
  name: string;
}

export interface WorkspaceFilesOptions {
  /** MGX_WORKSPACE_ROOT: workspaces are its direct children, named by id. */
  root: string;
  /** AGENT_CONTAINER_USER (uid:gid): what the server writes is handed to it, as the agent's own files are. */
  user: string;
  limits: FileLimits;
}

const CHUNK = 64 * 1024;

/**
 * The files of the workspaces on this host, for the API. Every access walks from the workspace
 * root one directory at a time through descriptors (see `at`): no symlink is followed, no FIFO
 * or device is opened, a hardlinked file is not read or overwritten, and nothing outside
 * `<root>/<id>` is reached whatever the agent left in it. Writes go to a new file that is then
 * renamed over the old name, so a write never goes through an existing inode.
 *
 * Whether a caller may see a workspace, and whether a session runs on it, is the API's concern.
 */
/** An upload's entry written under a temporary name in its directory, renamed into place at the end. */
interface Staged {
  rel: string[];
  tmp: string;
}

export class WorkspaceFiles {
  readonly root: string;
  readonly limits: FileLimits;
  readonly #owner: { uid: number; gid: number } | null;

  constructor(options: WorkspaceFilesOptions) {
    this.root = options.root;
    this.limits = options.limits;
    // root chowns to the agent's user; a rootless server opens modes instead (grantToAgentUser)
    this.#owner = process.getuid?.() === 0 ? parseUser(options.user) : null;
  }

  /** Whether the workspace has a directory on this host. */
  async exists(id: string): Promise<boolean> {
    try {
      await (await this.#openRoot(id)).close();
      return true;
    } catch (err) {
      if (err instanceof FilesError && err.code === FilesErrorCode.NOT_FOUND) return false;
      throw err;
    }
  }

  /** The entries of a directory (or of its whole tree), in walk order, a page at a time. */
  async list(id: string, path: string, options: ListOptions): Promise<{ entries: FileEntry[]; nextCursor: string | null }> {
    const base = parsePath(path);
    const after = options.cursor !== undefined ? parsePath(options.cursor) : undefined;
    const entries: FileEntry[] = [];
    const dir = await this.#openPath(id, base);
    try {
      for await (const { entry } of this.#walk(dir, base, options.recursive === true, after)) {
        if (entries.length === options.limit) return { entries, nextCursor: entries.at(-1)?.path ?? null };
        entries.push(entry);
      }
    } finally {
      await dir.close();
    }
    return { entries, nextCursor: null };
  }

  /** One entry's metadata (the root's when `path` is empty). */
  async stat(id: string, path: string): Promise<FileEntry> {
    const names = parsePath(path);
    const name = names.at(-1);
    if (name === undefined) {
      const root = await this.#openRoot(id);
      try {
        const st = await root.stat();
        return { path: '', name: '', type: 'directory', size: st.size, mtime: st.mtimeMs };
      } finally {
        await root.close();
      }
    }
    const dir = await this.#openPath(id, names.slice(0, -1));
    try {
      return await this.#entry(dir, name, names);
    } finally {
      await dir.close();
    }
  }

  /** A regular file opened for reading; the caller closes `fh`. */
  async openFile(id: string, path: string): Promise<OpenedFile> {
    const names = parsePath(path);
    const name = names.at(-1);
    if (name === undefined) throw new FilesError(FilesErrorCode.WRONG_TYPE, 'the workspace root is a directory');
    const dir = await this.#openPath(id, names.slice(0, -1));
    try {
      const rel = joinNames(names);
      const { fh, st } = await openFileAt(dir, name, rel);
      return { fh, path: rel, size: st.size, mtime: st.mtimeMs, contentType: contentTypeOf(name) };
    } finally {
      await dir.close();
    }
  }

  /** Up to `maxReadBytes` of a file from `offset`, as text when it is UTF-8, else base64. */
  async read(id: string, path: string, offset = 0, length?: number): Promise<ReadResult> {
    const file = await this.openFile(id, path);
    try {
      if (offset > file.size)
        throw new FilesError(FilesErrorCode.BAD_RANGE, `offset ${offset} is past the end of ${file.path} (${file.size} bytes)`);
      const want = Math.min(length ?? this.limits.maxReadBytes, this.limits.maxReadBytes, file.size - offset);
      const buf = Buffer.alloc(want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await file.fh.read(buf, got, want - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      const bytes = buf.subarray(0, got);
      const text = utf8Prefix(bytes, offset + got < file.size);
      const used = text === undefined ? got : Buffer.byteLength(text);
      return {
        path: file.path,
        size: file.size,
        offset,
        length: used,
        encoding: text === undefined ? 'base64' : 'utf8',
        content: text ?? bytes.toString('base64'),
        remaining: Math.max(0, file.size - offset - used),
      };
    } finally {
      await file.fh.close();
    }
  }

  /**
   * A gzip-compressed tar of the workspace (or of the directory `path`), produced as it is read:
   * one file is open at a time and its bytes flow through with backpressure, so memory stays the
   * same whatever the workspace holds. Symlinks are archived as links; FIFOs, sockets, devices
   * and hardlinked files are left out. Missing paths fail before the stream is returned.
   */
  async archive(id: string, path = ''): Promise<Readable> {
    const base = parsePath(path);
    const dir = await this.#openPath(id, base);
    const pack = tar.pack();
    const gzip = createGzip();
    const out = new PassThrough();
    void pipeline(pack, gzip, out).catch((err: unknown) => out.destroy(err as Error));
    // a reader that goes away stops the walk: every wait below gives up, and the walk's
    // directories and the open file are closed
    const stop = new AbortController();
    out.once('close', () => stop.abort());
    const { signal } = stop;
    const fill = async () => {
      try {
        for await (const { entry, dir: parent, name: leaf } of this.#walk(dir, base, true, undefined)) {
          if (signal.aborted) break;
          // names in the archive are relative to the directory archived
          const name = entry.path.split('/').slice(base.length).join('/');
          const mtime = new Date(entry.mtime);
          if (entry.type === 'directory') await addEntry(pack, { name: `${name}/`, type: 'directory', mode: 0o755, mtime }, signal);
          else if (entry.type === 'symlink') await addEntry(pack, { name, type: 'symlink', linkname: entry.target ?? '', mtime }, signal);
          else if (entry.type === 'file' && entry.links === undefined) await addFile(pack, parent, leaf, entry.path, name, mtime, signal);
        }
        if (!signal.aborted) pack.finalize();
      } catch (err) {
        pack.destroy(err as Error);
        out.destroy(err as Error);
      } finally {
        await dir.close();
      }
    };
    void fill();
    return out;
  }

  /**
   * Bytes of regular files, and counts of files and directories, in the workspace; the walk stops
   * after `maxEntries` entries (a listing's bound), so the counts are then lower bounds.
   */
  async usage(id: string, maxEntries = Number.POSITIVE_INFINITY): Promise<Usage> {
    const usage: Usage = { bytes: 0, files: 0, directories: 0 };
    const dir = await this.#openRoot(id);
    try {
      for await (const { entry: e } of this.#walk(dir, [], true, undefined)) {
        if (e.type === 'directory') usage.directories++;
        else {
          usage.files++;
          if (e.type === 'file') usage.bytes += e.size;
        }
        if (usage.files + usage.directories >= maxEntries) break;
      }
    } finally {
      await dir.close();
    }
    return usage;
  }

  /**
   * Writes `body` to the file at `path`, making its directories; the workspace is created when
   * it has none yet. Limited to `maxFileBytes` and the quota: past them nothing is left behind.
   */
  async writeFile(id: string, path: string, body: AsyncIterable<Buffer | string>): Promise<WriteResult> {
    const names = parsePath(path);
    const name = names.at(-1);
    if (name === undefined) throw new FilesError(FilesErrorCode.WRONG_TYPE, 'the workspace root is a directory: name a file');
    const room = await this.#room(id);
    const root = await this.#openRoot(id, true);
    try {
      const dir = await this.#makeDirs(root, names.slice(0, -1));
      try {
        const replaced = await this.#replacedBytes(dir, name, joinNames(names));
        const size = await this.#writeAt(dir, name, joinNames(names), body, Math.min(this.limits.maxFileBytes, room + replaced));
        return { path: joinNames(names), size };
      } finally {
        if (dir !== root) await dir.close();
      }
    } finally {
      await root.close();
    }
  }

  /**
   * Unpacks a gzip-compressed tar into the workspace (under `path`), making it if needed. Files,
   * directories and symlinks are accepted (links are written, never followed); hard links and
   * special files are refused, and so is every name that is not a plain relative path. Limited
   * in entries, bytes, file size and quota; entries written before a refusal stay.
   */
  async upload(id: string, path: string, body: Readable): Promise<UploadResult> {
    const base = parsePath(path);
    let room = await this.#room(id);
    const result: UploadResult = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
    const root = await this.#openRoot(id, true);
    const extract = tar.extract();
    let entries = 0;
    // every file and link lands under a temporary name beside its own; all are renamed into
    // place once the whole archive is read, so a refused or broken upload changes no file
    const staged: Staged[] = [];
    const onEntry = async (header: tar.Headers, stream: Readable) => {
      if (++entries > this.limits.maxUploadFiles)
        throw new FilesError(
          FilesErrorCode.TOO_LARGE,
          `the archive holds more than ${this.limits.maxUploadFiles} entries (MGX_MAX_UPLOAD_FILES)`,
        );
      let rel: string[];
      try {
        rel = [...base, ...parsePath(header.name.replace(/^\.\//, ''))];
      } catch (err) {
        throw new FilesError(
          FilesErrorCode.BAD_ARCHIVE,
          `archive entry ${JSON.stringify(header.name.slice(0, 200))}: ${(err as Error).message}`,
        );
      }
      if (rel.length > MAX_DEPTH) throw new FilesError(FilesErrorCode.BAD_ARCHIVE, `archive entry ${header.name} is too deep`);
      const name = rel.at(-1);
      if (header.type === 'directory') {
        stream.resume();
        const made = await this.#makeDirs(root, rel);
        if (made !== root) await made.close();
        if (rel.length > 0) result.directories++;
        return;
      }
      if (name === undefined) throw new FilesError(FilesErrorCode.BAD_ARCHIVE, `archive entry ${header.name} names the root`);
      const dir = await this.#makeDirs(root, rel.slice(0, -1));
      try {
        if (header.type === 'symlink') {
          stream.resume();
          await this.#symlinkAt(dir, name, joinNames(rel), header.linkname ?? '', (tmp) => staged.push({ rel, tmp }));
          result.symlinks++;
        } else if (header.type === 'file' || header.type === 'contiguous-file') {
          const replaced = await this.#replacedBytes(dir, name, joinNames(rel));
          const max = Math.min(this.limits.maxFileBytes, this.limits.maxUploadBytes - result.bytes, room + replaced);
          // through a core stream: leaving it early must not close the extractor before it hears why;
          // the entry's own end short of its size (a body cut off) must end the write, or it waits for ever
          const body = stream.pipe(new PassThrough());
          finished(stream, (err) => {
            if (err) body.destroy(new FilesError(FilesErrorCode.BAD_ARCHIVE, `archive entry ${joinNames(rel)} ends early: ${err.message}`));
          });
          const size = await this.#writeAt(dir, name, joinNames(rel), body, max, {
            uploadLeft: this.limits.maxUploadBytes - result.bytes,
            staged: (tmp) => staged.push({ rel, tmp }),
          });
          room -= size - replaced;
          result.bytes += size;
          result.files++;
        } else {
          throw new FilesError(
            FilesErrorCode.BAD_ARCHIVE,
            `archive entry ${joinNames(rel)} is a ${header.type ?? 'special file'}: only files, directories and symlinks are accepted`,
          );
        }
      } finally {
        if (dir !== root) await dir.close();
      }
    };
    // the first refusal: leaving an entry's stream early closes the extractor before it is told why
    let refused: Error | undefined;
    let current: Promise<void> = Promise.resolve();
    extract.on('entry', (header, stream, next) => {
      current = onEntry(header, stream).then(
        () => next(),
        (err: unknown) => {
          const error = err instanceof Error ? err : new Error(String(err));
          refused ??= error;
          extract.destroy(error);
        },
      );
    });
    try {
      await pipeline(body, createGunzip(), extract);
      await this.#settle(root, staged, true);
    } catch (err) {
      await current;
      await this.#settle(root, staged, false);
      if (refused !== undefined) throw refused;
      if (err instanceof FilesError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'Z_DATA_ERROR' || code === 'Z_BUF_ERROR' || /header|tar|unexpected end/i.test((err as Error).message))
        throw new FilesError(FilesErrorCode.BAD_ARCHIVE, `not a gzip-compressed tar: ${(err as Error).message}`, { cause: err });
      throw err;
    } finally {
      await root.close();
    }
    return result;
  }

  /** Deletes a file or symlink, or a directory (with its contents when `recursive`). */
  async remove(id: string, path: string, options: { recursive?: boolean } = {}): Promise<{ path: string; type: EntryType }> {
    const names = parsePath(path);
    const name = names.at(-1);
    if (name === undefined) throw new FilesError(FilesErrorCode.INVALID_PATH, 'the workspace root: delete the workspace instead');
    const rel = joinNames(names);
    const dir = await this.#openPath(id, names.slice(0, -1));
    try {
      const st = await lstatAt(dir, name, rel);
      try {
        if (!st.isDirectory()) await unlink(at(dir, name));
        // rm lstats each entry and unlinks links without following them
        else if (options.recursive) await rm(at(dir, name), { recursive: true });
        else await rmdir(at(dir, name));
      } catch (err) {
        throw fsError(err, rel);
      }
      return { path: rel, type: typeOf(st) };
    } finally {
      await dir.close();
    }
  }

  /** Deletes the workspace's directory and everything in it; false when there was none. */
  async removeWorkspace(id: string): Promise<boolean> {
    const path = join(this.root, checkWorkspaceId(id));
    const existed = await this.exists(id);
    // rm lstats each entry and unlinks links without following them
    await rm(path, { recursive: true, force: true });
    return existed;
  }

  // ---- the walk ----------------------------------------------------------------------

  /**
   * The entries under `dir` (at `base`), depth first with each directory's names sorted, so the
   * order is stable and a cursor (the last path seen) says where to go on. One open directory
   * per level; subtrees wholly before `after` are not opened.
   */
  async *#walk(dir: FileHandle, base: string[], recursive: boolean, after: string[] | undefined): AsyncGenerator<Located> {
    const names: string[] = [];
    const listing = await opendir(`/proc/self/fd/${dir.fd}`);
    for await (const d of listing) names.push(d.name);
    names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const name of names) {
      const rel = [...base, name];
      const order = after ? comparePaths(rel, after) : 1;
      // a directory the cursor is below: its entries up to the cursor are skipped, the rest walked
      const inside = after !== undefined && after.length > rel.length && comparePaths(after.slice(0, rel.length), rel) === 0;
      if (order < 0 && !inside) continue;
      let entry: FileEntry;
      try {
        entry = await this.#entry(dir, name, rel);
      } catch (err) {
        // gone since the listing (the agent is at work): skip it
        if (err instanceof FilesError && err.code === FilesErrorCode.NOT_FOUND) continue;
        throw err;
      }
      // `dir` stays open while the consumer handles the entry (the generator waits at yield)
      if (order > 0) yield { entry, dir, name };
      if (recursive && entry.type === 'directory' && rel.length < MAX_DEPTH) {
        let sub: FileHandle;
        try {
          sub = await openDirAt(dir, name, entry.path);
        } catch (err) {
          // replaced by a link or removed since its lstat: not followed
          if (err instanceof FilesError) continue;
          throw err;
        }
        try {
          yield* this.#walk(sub, rel, true, inside ? after : undefined);
        } finally {
          await sub.close();
        }
      }
    }
  }

  async #entry(dir: FileHandle, name: string, names: string[]): Promise<FileEntry> {
    const path = joinNames(names);
    const st = await lstatAt(dir, name, path);
    const type = typeOf(st);
    return {
      path,
      name,
      type,
      size: st.size,
      mtime: Math.round(st.mtimeMs),
      ...(type === 'symlink' ? { target: await readlinkAt(dir, name) } : {}),
      ...(type === 'file' && st.nlink > 1 ? { links: st.nlink } : {}),
    };
  }

  // ---- opening -----------------------------------------------------------------------

  /** `<root>/<id>`, opened as a directory (a link there is refused); made first when `create`. */
  async #openRoot(id: string, create = false): Promise<FileHandle> {
    const path = join(this.root, checkWorkspaceId(id));
    if (create) {
      mkdirSync(this.root, { recursive: true, mode: 0o711 });
      try {
        mkdirSync(path, { mode: 0o750 });
        const fh = await open(path, DIR_FLAGS);
        await this.#grant(fh, true);
        return fh;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    try {
      const fh = await open(path, DIR_FLAGS);
      return fh;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new FilesError(FilesErrorCode.NOT_FOUND, `workspace ${id} has no files on this host`);
      if (code === 'ELOOP' || code === 'ENOTDIR') throw new FilesError(FilesErrorCode.REFUSED, `workspace ${id} is not a plain directory`);
      throw err;
    }
  }

  /** The directory at `names`, opened level by level from the workspace root. */
  async #openPath(id: string, names: readonly string[]): Promise<FileHandle> {
    let dir = await this.#openRoot(id);
    for (let i = 0; i < names.length; i++) {
      try {
        const next = await openDirAt(dir, names[i] ?? '', joinNames(names.slice(0, i + 1)));
        await dir.close();
        dir = next;
      } catch (err) {
        await dir.close();
        throw err;
      }
    }
    return dir;
  }

  /** The directory at `names` under `root`, made where missing; `root` itself when `names` is empty. */
  async #makeDirs(root: FileHandle, names: readonly string[]): Promise<FileHandle> {
    let dir = root;
    for (let i = 0; i < names.length; i++) {
      const name = names[i] ?? '';
      try {
        const next = await mkdirAt(dir, name, joinNames(names.slice(0, i + 1)), (fh, isDir) => this.#grant(fh, isDir));
        if (dir !== root) await dir.close();
        dir = next;
      } catch (err) {
        if (dir !== root) await dir.close();
        throw err;
      }
    }
    return dir;
  }

  /** Hands what the server made to the agent's user, as its own files are. */
  async #grant(fh: FileHandle, dir: boolean): Promise<void> {
    if (this.#owner) await fh.chown(this.#owner.uid, this.#owner.gid);
    else await fh.chmod(dir ? 0o777 : 0o666);
  }

  // ---- writing -----------------------------------------------------------------------

  /** Bytes left under the quota (Infinity without one). */
  async #room(id: string): Promise<number> {
    if (this.limits.quotaBytes === 0) return Number.POSITIVE_INFINITY;
    const used = (await this.exists(id)) ? (await this.usage(id)).bytes : 0;
    return Math.max(0, this.limits.quotaBytes - used);
  }

  /** The size of the regular file a write replaces (0 when none); refuses to replace a directory. */
  async #replacedBytes(dir: FileHandle, name: string, path: string): Promise<number> {
    let st;
    try {
      st = await lstatAt(dir, name, path);
    } catch (err) {
      if (err instanceof FilesError && err.code === FilesErrorCode.NOT_FOUND) return 0;
      throw err;
    }
    if (st.isDirectory()) throw new FilesError(FilesErrorCode.WRONG_TYPE, `${path} is a directory`);
    return st.isFile() ? st.size : 0;
  }

  /**
   * Streams `body` into a new file beside `name`, then renames it over `name`: whatever was there
   * (a symlink, a hardlinked file, a FIFO) is replaced as a name, never written through.
   */
  async #writeAt(
    dir: FileHandle,
    name: string,
    path: string,
    body: AsyncIterable<Buffer | string>,
    max: number,
    why: { uploadLeft?: number; staged?: (tmp: string) => void } = {},
  ): Promise<number> {
    const tmp = `.mgx-write-${randomBytes(6).toString('hex')}`;
    let fh: FileHandle;
    try {
      fh = await open(at(dir, tmp), CREATE_FLAGS, 0o644);
    } catch (err) {
      throw fsError(err, path);
    }
    let size = 0;
    try {
      await this.#grant(fh, false);
      for await (const chunk of body) {
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        size += buf.length;
        if (size > max) throw this.#overLimit(path, size, why.uploadLeft);
        await fh.write(buf);
      }
    } catch (err) {
      await fh.close();
      await unlink(at(dir, tmp)).catch(() => undefined);
      throw fsError(err, path);
    }
    await fh.close();
    if (why.staged) {
      why.staged(tmp);
      return size;
    }
    try {
      await rename(at(dir, tmp), at(dir, name));
    } catch (err) {
      await unlink(at(dir, tmp)).catch(() => undefined);
      throw fsError(err, path);
    }
    return size;
  }

  /**
   * Renames an upload's staged entries into place, in archive order (a later entry of a name
   * wins), or removes them (commit false: best effort, nothing of the upload stays but the
   * directories it made). Entries come grouped by directory, so each is opened once.
   */
  async #settle(root: FileHandle, staged: readonly Staged[], commit: boolean): Promise<void> {
    let dirPath: string | undefined;
    let dir: FileHandle | undefined;
    const closeDir = async () => {
      if (dir && dir !== root) await dir.close();
      dir = undefined;
    };
    try {
      for (const { rel, tmp } of staged) {
        const parent = rel.slice(0, -1);
        if (dir === undefined || joinNames(parent) !== dirPath) {
          await closeDir();
          dirPath = joinNames(parent);
          dir = commit ? await this.#makeDirs(root, parent) : await this.#makeDirs(root, parent).catch(() => undefined);
          if (dir === undefined) continue;
        }
        if (!commit) {
          await unlink(at(dir, tmp)).catch(() => undefined);
          continue;
        }
        try {
          await rename(at(dir, tmp), at(dir, rel.at(-1) ?? ''));
        } catch (err) {
          throw fsError(err, joinNames(rel));
        }
      }
    } finally {
      await closeDir();
    }
  }

  #overLimit(path: string, size: number, uploadLeft: number | undefined): FilesError {
    const { maxFileBytes, maxUploadBytes, quotaBytes } = this.limits;
    if (size > maxFileBytes)
      return new FilesError(FilesErrorCode.TOO_LARGE, `${path} is larger than ${maxFileBytes} bytes (MGX_MAX_FILE_BYTES)`);
    if (uploadLeft !== undefined && size > uploadLeft)
      return new FilesError(FilesErrorCode.TOO_LARGE, `the upload is larger than ${maxUploadBytes} bytes (MGX_MAX_UPLOAD_BYTES)`);
    return new FilesError(
      FilesErrorCode.QUOTA_EXCEEDED,
      `writing ${path} would take the workspace over its quota of ${quotaBytes} bytes (MGX_WORKSPACE_QUOTA_BYTES)`,
    );
  }

  async #symlinkAt(dir: FileHandle, name: string, path: string, target: string, staged?: (tmp: string) => void): Promise<void> {
    if (target === '' || target.includes('\0')) throw new FilesError(FilesErrorCode.BAD_ARCHIVE, `${path}: a symlink without a target`);
    const tmp = `.mgx-link-${randomBytes(6).toString('hex')}`;
    try {
      await symlink(target, at(dir, tmp));
      if (staged) return staged(tmp);
      await rename(at(dir, tmp), at(dir, name));
    } catch (err) {
      await unlink(at(dir, tmp)).catch(() => undefined);
      throw fsError(err, path);
    }
  }
}

/** Adds the regular file `leaf` of `dir`; one that changed since it was listed (a link, a FIFO, gone) is left out. */
async function addFile(
  pack: tar.Pack,
  dir: FileHandle,
  leaf: string,
  path: string,
  name: string,
  mtime: Date,
  signal: AbortSignal,
): Promise<void> {
  let file;
  try {
    file = await openFileAt(dir, leaf, path);
  } catch (err) {
    if (err instanceof FilesError) return;
    throw err;
  }
  const { fh, st } = file;
  try {
    await new Promise<void>((resolve, reject) => {
      const sink = pack.entry({ name, type: 'file', size: st.size, mode: 0o644, mtime }, (err) => (err ? reject(err) : resolve()));
      // a pack already destroyed (its reader went away) gives no entry stream
      if (!(sink as typeof sink | undefined)) return reject(new Error('the archive was closed'));
      signal.addEventListener('abort', () => reject(new Error('the archive was closed')), { once: true });
      copyExactly(fh, st.size, sink, signal).catch((cause: unknown) => {
        const err = cause instanceof Error ? cause : new Error(String(cause));
        sink.destroy(err);
        reject(err);
      });
    });
  } finally {
    await fh.close();
  }
}

/** Adds a bodiless entry, waiting while the archive's reader is behind. */
function addEntry(pack: tar.Pack, header: tar.Headers, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    signal.addEventListener('abort', () => reject(new Error('the archive was closed')), { once: true });
    pack.entry(header, Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Exactly `size` bytes of `fh` into `sink`, with backpressure: a file that grew is cut at the
 * size its header announced, one that shrank is padded with zeros (the agent may be writing).
 */
async function copyExactly(fh: FileHandle, size: number, sink: Writable, signal: AbortSignal): Promise<void> {
  let done = 0;
  while (done < size) {
    signal.throwIfAborted();
    const buf = Buffer.alloc(Math.min(CHUNK, size - done));
    const { bytesRead } = await fh.read(buf, 0, buf.length, done);
    const chunk = bytesRead === 0 ? buf : buf.subarray(0, bytesRead);
    done += chunk.length;
    if (!sink.write(chunk)) await once(sink, 'drain', { signal });
  }
  sink.end();
}

/** The longest UTF-8 text `bytes` starts with, or undefined when it is not text. */
function utf8Prefix(bytes: Buffer, cut: boolean): string | undefined {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  // a read that stops mid-file may cut a character in two: up to 3 bytes may be left for the next
  for (let drop = 0; drop <= (cut ? 3 : 0) && drop <= bytes.length; drop++) {
    try {
      const text = decoder.decode(bytes.subarray(0, bytes.length - drop));
      return text.includes('\0') ? undefined : text;
    } catch {
      // not text with this many bytes; try fewer
    }
  }
  return undefined;
}

/** The content type a file is served with, from its name; octet-stream when unknown. */
export function contentTypeOf(name: string): string {
  const type = lookup(name);
  if (type === false) return 'application/octet-stream';
  return /^text\/|javascript|json|xml/.test(type) ? `${type}; charset=utf-8` : type;
}
