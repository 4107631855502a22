import { useEffect, useRef } from 'preact/hooks';

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
