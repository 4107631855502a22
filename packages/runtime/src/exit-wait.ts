import { setTimeout as sleep } from 'node:timers/promises';
import type { ContainerRuntime, ExitInfo } from './container-runtime.js';
import { RuntimeError, RuntimeErrorCode } from './errors.js';

/** What `waitForExit` reports for a container that is gone: it cannot say how it ended. */
export const MISSING_EXIT: ExitInfo = Object.freeze({ exitCode: -1, oomKilled: false });

export interface ExitWaitOptions {
  /** Interval of the inspect that backs up the engine's wait; 0: none (the caller polls already). */
  pollMs: number;
  /** Pause before asking the engine's wait again after it failed; default 500 ms. */
  retryMs?: number;
  /** Pauses between attempts; the monitor passes its own clock so tests control time. */
  pause?: (ms: number) => Promise<void>;
  /** Stops both loops; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** A failed wait, before it is asked again. */
  onRetry?: (err: unknown) => void;
}

/**
 * Resolves once the container has exited, or with MISSING_EXIT once it is gone. The engine's
 * wait is the live path; an inspect every `pollMs` backs it up, because a wait whose
 * connection dies with an engine restart can hang instead of failing.
 */
export function waitForExit(runtime: Pick<ContainerRuntime, 'wait' | 'inspect'>, id: string, options: ExitWaitOptions): Promise<ExitInfo> {
  const { pollMs, retryMs = 500, pause = (ms: number) => sleep(ms), signal, onRetry } = options;
  return new Promise<ExitInfo>((resolve, reject) => {
    let done = false;
    const finish = (exit: ExitInfo) => {
      if (done) return;
      done = true;
      signal?.removeEventListener('abort', abort);
      resolve(exit);
    };
    const abort = () => {
      if (done) return;
      done = true;
      reject(signal?.reason as Error);
    };
    if (signal?.aborted) return abort();
    signal?.addEventListener('abort', abort, { once: true });

    void (async () => {
      while (!done) {
        try {
          finish(await runtime.wait(id));
        } catch (err) {
          if (err instanceof RuntimeError && err.code === RuntimeErrorCode.CONTAINER_NOT_FOUND) finish(MISSING_EXIT);
          else {
            if (!done) onRetry?.(err);
            await pause(retryMs);
          }
        }
      }
    })();
    if (pollMs <= 0) return;
    void (async () => {
      while (!done) {
        await pause(pollMs);
        if (done) return;
        try {
          const state = await runtime.inspect(id);
          if (state === null) finish(MISSING_EXIT);
          else if (!state.running && state.exitCode !== null) finish({ exitCode: state.exitCode, oomKilled: state.oomKilled });
        } catch {
          // the engine is away; the next round asks again
        }
      }
    })();
  });
}
