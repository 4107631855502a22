import type { AgentEventType, FinishData, LogData } from './events.js';

/** What a framework uses to report progress. Every call becomes one stored event. */
export interface Emitter {
  /** Emits any agent event but FINISH (the runner emits FINISH from the framework's result). */
  emit(type: Exclude<AgentEventType, 'FINISH' | 'START'>, data: Record<string, unknown>): void;
  /** Streams one chunk of an assistant message; call `messageDone` once the message is complete. */
  messageDelta(messageId: string, delta: string): void;
  messageDone(messageId: string, text: string): void;
  log(text: string, stream?: LogData['stream'], level?: LogData['level']): void;
  /**
   * Resolves when the transport has room again. A framework that emits in a tight
   * loop awaits this now and then so memory stays bounded.
   */
  drain(): Promise<void>;
}

export interface FrameworkContext {
  sessionId: string;
  prompt: string;
  /** Absolute path of the session's workspace; the only place the agent should write. */
  workspace: string;
  /**
   * The session's framework options, as the client sent them: the platform does not check them
   * against `optionsSchema`, so the framework checks them itself (and throws naming the option).
   */
  options: Record<string, unknown>;
  /** The session's environment for the agent's own processes (commands it runs). */
  env: Record<string, string>;
  /**
   * The session's secrets that this framework asked for (`Framework.secretsWanted`), and only
   * those: the rest never reach the container. Never put them in events.
   */
  secrets: Record<string, string>;
  /**
   * Endpoints the platform offers on 127.0.0.1 inside the container, each carried to the host
   * over the session's socket directory; absent when the server offers none (an older server).
   */
  gateway?: GatewayEndpoints;
  emit: Emitter;
  /** Aborted when the platform stops the session (SIGTERM: deadline or cancel). */
  signal: AbortSignal;
  /**
   * While set, a stop (SIGTERM) that arrives is dropped: `signal` is not aborted and the run
   * goes on until the platform kills the container. Only for simulating an agent that does not
   * stop (tests); a real framework stops promptly instead. The runner always provides it;
   * optional so that a unit test's context can leave it out.
   */
  ignoreStop?(ignore: boolean): void;
}

export interface GatewayEndpoints {
  /** An OpenAI-compatible base URL (`http://127.0.0.1:P/v1`); the host adds the provider's key. */
  openaiBaseUrl?: string;
  /** An HTTP CONNECT proxy (`http://127.0.0.1:P`) to the domains the session may reach. */
  httpProxy?: string;
}

/** How the framework's run ended; the runner turns it into FINISH. */
export type FrameworkResult =
  { status: 'succeeded'; message?: string } | { status: 'failed'; reason?: Extract<FinishData['reason'], 'agent_error'>; message: string };

/**
 * Thrown by a framework to end the runner at once with exit code `code` and no FINISH, as if
 * the agent's process had exited (the platform then ends the session `exited_without_finish`).
 * What was emitted before is still stored first.
 */
export class ExitWithoutFinish extends Error {
  override readonly name = 'ExitWithoutFinish';
  constructor(readonly code: number) {
    super(`exit ${code} without FINISH`);
  }
}

/**
 * An agent framework plugin. `run` does the work and resolves with the result; a thrown
 * error ends the session failed with reason agent_error and the error's message.
 */
export interface Framework {
  name: string;
  description: string;
  /** JSON Schema of `options`, reported by `frameworks.list`. */
  optionsSchema: Record<string, unknown>;
  /**
   * True when it cannot work without network egress (it calls a remote API), unless the
   * session names a model provider of the server (`options.provider`): then the gateway
   * carries its calls and the container keeps no network.
   */
  requiresEgress?: boolean;
  /**
   * Names of the session secrets it needs for these options and this prompt. The host sends
   * the runner only those; without this method, none.
   */
  secretsWanted?(options: Record<string, unknown>, prompt: string): string[];
  run(ctx: FrameworkContext): Promise<FrameworkResult>;
}

/** Frameworks by name. The runner bundles the ones listed at image build. */
export class FrameworkRegistry {
  readonly #byName = new Map<string, Framework>();

  register(framework: Framework): this {
    if (this.#byName.has(framework.name)) throw new Error(`framework "${framework.name}" is registered twice`);
    this.#byName.set(framework.name, framework);
    return this;
  }

  get(name: string): Framework | undefined {
    return this.#byName.get(name);
  }

  list(): Framework[] {
    return [...this.#byName.values()];
  }
}
