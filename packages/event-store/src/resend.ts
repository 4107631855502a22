import type { NewEvent } from './ports.js';

/** The events of an append that are new, and what was dropped as re-sent. */
export interface FreshEvents {
  /** The events to store, in order. */
  fresh: NewEvent[];
  /** How many were dropped as re-sent. */
  duplicates: number;
  /** The highest rid seen: `lastRid` or the last fresh event's. */
  lastRid: number;
}

/**
 * The re-send rule of both adapters. A runner numbers its events with increasing ids (rid), so
 * an event whose rid is not above every rid before it (`lastRid`, the highest one stored, then
 * those earlier in the batch) was sent before: it is dropped. Events without a rid (platform
 * events) are always new.
 */
export function dropResent(events: readonly NewEvent[], lastRid: number): FreshEvents {
  let highest = lastRid;
  let duplicates = 0;
  const fresh: NewEvent[] = [];
  for (const ev of events) {
    if (ev.rid !== undefined) {
      if (ev.rid <= highest) {
        duplicates++;
        continue;
      }
      highest = ev.rid;
    }
    fresh.push(ev);
  }
  return { fresh, duplicates, lastRid: highest };
}
