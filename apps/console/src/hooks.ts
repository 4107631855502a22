import { useEffect, useRef, useState } from 'preact/hooks';
import { errorText } from './api.js';

/**
 * Runs `fn` now and every `ms` while the page shows, each call after the previous one ended
 * (a slow server is never asked twice at once). `deps` restart it.
 */
export function usePoll(fn: (signal: AbortSignal) => Promise<void>, ms: number, deps: unknown[]): void {
  const latest = useRef(fn);
  latest.current = fn;
  useEffect(() => {
    const ac = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        await latest.current(ac.signal);
      } finally {
        if (!ac.signal.aborted && ms > 0) timer = setTimeout(() => void tick(), ms);
      }
    };
    void tick();
    return () => {
      ac.abort();
      clearTimeout(timer);
    };
    // the caller names what restarts the poll; `fn` is read fresh each time
  }, deps);
}

/**
 * `query`'s answer, asked as usePoll asks: the last answer stays shown when a later ask fails,
 * beside the error, which the next answer clears. An ask that was called off changes nothing.
 * `setError` lets the page show its own failures (a download) in the same place.
 */
export function usePolled<T>(
  query: (signal: AbortSignal) => Promise<T>,
  ms: number,
  deps: unknown[],
): { data: T | undefined; error: string | undefined; setError: (error: string | undefined) => void } {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<string>();
  usePoll(
    async (signal) => {
      try {
        const answer = await query(signal);
        if (!signal.aborted) {
          setData(() => answer);
          setError(undefined);
        }
      } catch (err) {
        if (!signal.aborted) setError(errorText(err));
      }
    },
    ms,
    deps,
  );
  return { data, error, setError };
}
