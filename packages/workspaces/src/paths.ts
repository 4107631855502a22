import { ID_PATTERN } from '@mgx/config';
import { FilesError, FilesErrorCode } from './errors.js';

/** The deepest path served: each level is one open directory while it is walked. */
export const MAX_DEPTH = 64;
const MAX_NAME_BYTES = 255;
const MAX_PATH_BYTES = 4096;

const invalid = (message: string) => new FilesError(FilesErrorCode.INVALID_PATH, message);

/** A workspace id as the API takes it: the strict id pattern, so it is one plain directory name. */
export function checkWorkspaceId(id: string): string {
  if (!ID_PATTERN.test(id)) throw invalid(`invalid workspace id ${JSON.stringify(id.slice(0, 80))}: 1-64 letters, digits, _ or -`);
  return id;
}

/** One name of a path: no separator, no `.` or `..`, no NUL or control character, at most 255 bytes. */
export function checkName(name: string): string {
  if (name === '' || name === '.' || name === '..') throw invalid(`path component ${JSON.stringify(name)} is not allowed`);
  // a backslash is a name character on Linux, but a separator to Windows clients: refused as ambiguous
  // eslint-disable-next-line no-control-regex -- control characters are exactly what it refuses
  if (/[/\\\u0000-\u001f\u007f]/.test(name)) throw invalid(`path component ${JSON.stringify(name)} holds a separator or control character`);
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) throw invalid(`a path component is longer than ${MAX_NAME_BYTES} bytes`);
  return name;
}

/**
 * A path inside a workspace, relative to its root, as its names. `''` (or `/` alone) is the
 * root. Absolute paths, `.` and `..` anywhere, empty components (`a//b`), NUL and control
 * characters are refused, never normalized: what is refused cannot be misread by a later step.
 * One trailing slash is allowed (`dir/`).
 */
export function parsePath(path: string): string[] {
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) throw invalid(`the path is longer than ${MAX_PATH_BYTES} bytes`);
  if (path === '' || path === '/' || path === '.') return [];
  if (path.startsWith('/')) throw invalid(`the path ${JSON.stringify(path.slice(0, 200))} is absolute; give it relative to the workspace`);
  const names = (path.endsWith('/') ? path.slice(0, -1) : path).split('/');
  if (names.length > MAX_DEPTH) throw invalid(`the path is deeper than ${MAX_DEPTH} levels`);
  return names.map(checkName);
}

/** URL path segments (still percent-encoded) as names: each is decoded once and checked whole, so `%2F` and `%2e%2e` are refused. */
export function namesFromUrl(segments: string[]): string[] {
  if (segments.length > MAX_DEPTH) throw invalid(`the path is deeper than ${MAX_DEPTH} levels`);
  return segments.map((s) => {
    let name: string;
    try {
      name = decodeURIComponent(s);
    } catch {
      throw invalid('the path is not valid percent-encoded UTF-8');
    }
    return checkName(name);
  });
}

/** Names back to the relative path clients see. */
export const joinNames = (names: readonly string[]): string => names.join('/');

/** Walk order: names compared component by component, the order a depth-first walk with sorted directories visits them. */
export function comparePaths(a: readonly string[], b: readonly string[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i] ?? '';
    const y = b[i] ?? '';
    if (x !== y) return x < y ? -1 : 1;
  }
  return a.length - b.length;
}
