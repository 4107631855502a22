import type { SessionPage, SessionRecord } from './ports.js';
import { StoreError, StoreErrorCode } from './errors.js';

/**
 * The listSessions cursor, the same in every adapter: the position (`pos`, the creation order)
 * of the last session on the previous page, as decimal text. Pages run newest first, so the
 * next page holds the sessions below that position.
 */

/** The position a page starts below: every position when there is no cursor. */
export function decodeCursor(cursor: string | undefined): number {
  if (cursor === undefined) return Number.MAX_SAFE_INTEGER;
  if (!/^\d+$/.test(cursor)) throw new StoreError(StoreErrorCode.INVALID_CURSOR, `invalid cursor "${cursor}"`);
  return Number(cursor);
}

/**
 * One page from the rows an adapter read, newest first: it reads `limit + 1` rows, and the
 * one past the limit only tells that a next page exists.
 */
export function toPage<R extends { pos: number }>(rows: readonly R[], limit: number, toSession: (row: R) => SessionRecord): SessionPage {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return {
    items: page.map(toSession),
    nextCursor: rows.length > limit && last ? String(last.pos) : null,
  };
}
