import { constants, type Stats } from 'node:fs';
import { lstat, mkdir, open, readlink, type FileHandle } from 'node:fs/promises';
import { FilesError, FilesErrorCode } from './errors.js';

/**
 * openat(2) for Node: a path under `/proc/self/fd/<dir fd>/` resolves from the directory that
 * descriptor has open, wherever it was moved and whatever replaced its old path, so each step
 * of a walk names ONE component relative to a directory already opened and checked. With
 * O_NOFOLLOW on that component, no symlink the agent left is ever followed: the server cannot
 * be led outside the workspace, whatever the agent did to it before or during the walk.
 */
export const at = (dir: FileHandle, name: string): string => `/proc/self/fd/${dir.fd}/${name}`;

const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY, O_WRONLY, O_CREAT, O_EXCL } = constants;
export const DIR_FLAGS = O_RDONLY | O_DIRECTORY | O_NOFOLLOW;
// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (a lstat-then-open
// race could still hand us one); O_NOCTTY: a terminal never becomes ours
const READ_FLAGS = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
export const CREATE_FLAGS = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY;

export type EntryType = 'file' | 'directory' | 'symlink' | 'other';

export const typeOf = (st: Stats): EntryType =>
  st.isFile() ? 'file' : st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'other';

/** What is refused to be read, and why, or null for a regular file with one link. */
export function whyRefused(st: Stats, path: string): string | null {
  if (st.isSymbolicLink()) return `${path} is a symbolic link: links are listed, never followed`;
  if (st.isDirectory()) return null;
  if (!st.isFile()) return `${path} is not a regular file (a FIFO, socket or device is never opened)`;
  // a second name of the same inode could be a file the server should not hand out (on a
  // shared filesystem, one linked in from outside the workspace): it is not read or overwritten
  if (st.nlink > 1) return `${path} has ${st.nlink} hard links: a hardlinked file is not served`;
  return null;
}

/** A failed call on `path` as a FilesError a client can act on; anything unexpected passes through. */
export function fsError(err: unknown, path: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT':
      return new FilesError(FilesErrorCode.NOT_FOUND, `${path || '/'}: no such file or directory`, { cause: err });
    case 'ELOOP':
      return new FilesError(FilesErrorCode.REFUSED, `${path}: a symbolic link is in the way; links are never followed`, { cause: err });
    case 'ENOTDIR':
      return new FilesError(FilesErrorCode.WRONG_TYPE, `${path}: a component of the path is not a directory`, { cause: err });
    case 'EISDIR':
      return new FilesError(FilesErrorCode.WRONG_TYPE, `${path} is a directory`, { cause: err });
    case 'ENOTEMPTY':
    case 'EEXIST':
      return new FilesError(FilesErrorCode.NOT_EMPTY, `${path} is a directory that is not empty`, { cause: err });
    case 'ENAMETOOLONG':
      return new FilesError(FilesErrorCode.INVALID_PATH, `${path}: the name is too long`, { cause: err });
    case 'ENOSPC':
    case 'EDQUOT':
      return new FilesError(FilesErrorCode.QUOTA_EXCEEDED, `${path}: the disk is full`, { cause: err });
    default:
      return err;
  }
}

/** Opens the directory `name` in `dir`, refusing a link or anything but a directory. */
export async function openDirAt(dir: FileHandle, name: string, path: string): Promise<FileHandle> {
  let fh: FileHandle;
  try {
    fh = await open(at(dir, name), DIR_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // O_NOFOLLOW|O_DIRECTORY on a link fails with ENOTDIR or ELOOP: say which it was
    if ((code === 'ENOTDIR' || code === 'ELOOP') && (await lstat(at(dir, name)).catch(() => null))?.isSymbolicLink())
      throw new FilesError(FilesErrorCode.REFUSED, `${path} is a symbolic link: links are listed, never followed`, { cause: err });
    throw fsError(err, path);
  }
  const st = await fh.stat();
  if (!st.isDirectory()) {
    await fh.close();
    throw new FilesError(FilesErrorCode.WRONG_TYPE, `${path} is not a directory`);
  }
  return fh;
}

/** Metadata of `name` in `dir`, without following a link there. */
export async function lstatAt(dir: FileHandle, name: string, path: string): Promise<Stats> {
  try {
    return await lstat(at(dir, name));
  } catch (err) {
    throw fsError(err, path);
  }
}

/** Where the symlink `name` in `dir` points (read, never followed). */
export async function readlinkAt(dir: FileHandle, name: string): Promise<string> {
  return readlink(at(dir, name)).catch(() => '');
}

/**
 * Opens the regular file `name` in `dir` for reading. Checked before opening (no FIFO or device
 * is opened) and again on what was opened (fstat), so a swap in between is caught.
 */
export async function openFileAt(dir: FileHandle, name: string, path: string): Promise<{ fh: FileHandle; st: Stats }> {
  const before = await lstatAt(dir, name, path);
  if (before.isDirectory()) throw new FilesError(FilesErrorCode.WRONG_TYPE, `${path} is a directory`);
  const refused = whyRefused(before, path);
  if (refused) throw new FilesError(FilesErrorCode.REFUSED, refused);
  let fh: FileHandle;
  try {
    fh = await open(at(dir, name), READ_FLAGS);
  } catch (err) {
    throw fsError(err, path);
  }
  const st = await fh.stat();
  const after = st.isDirectory() ? `${path} is a directory` : whyRefused(st, path);
  if (after) {
    await fh.close();
    throw new FilesError(FilesErrorCode.REFUSED, after);
  }
  return { fh, st };
}

/** Makes the directory `name` in `dir` unless it exists; ensures the agent's user can use it. */
export async function mkdirAt(dir: FileHandle, name: string, path: string, grant: (fh: FileHandle, dir: boolean) => Promise<void>) {
  try {
    await mkdir(at(dir, name), { mode: 0o755 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(err, path);
    return openDirAt(dir, name, path);
  }
  const fh = await openDirAt(dir, name, path);
  await grant(fh, true);
  return fh;
}
