import type { ChildProcess } from 'node:child_process';
import type { AgentEventType, Framework, FrameworkContext, FrameworkResult, GatewayEndpoints } from '@mgx/agent-sdk';

/** PATH of every command an agent runs; the image keeps its tools in these. */
export const COMMAND_PATH = '/usr/local/bin:/usr/bin:/bin';
/** A longer output line is cut here, so one line cannot exceed an event's size limit. */
export const MAX_LINE_BYTES = 64 * 1024;
/** Time a command gets between SIGTERM and SIGKILL. */
export const KILL_GRACE_MS = 5000;
/** Time the output pipes may stay open after the command exited (a background process holds them). */
const LINGER_MS = 10_000;

/** What an OpenAI client is given for the gateway: a stand-in key, since the host adds the real one. */
export const GATEWAY_PLACEHOLDER_KEY = 'mgx-gateway';

/**
 * The environment of a command: a fixed PATH and HOME, the platform's endpoints (an OpenAI
 * base URL and a placeholder key for the model gateway, HTTP(S)_PROXY for the egress proxy),
 * then the session's env, which may override them. Nothing of the runner's own environment
 * (MGX_*, NODE_*) reaches the command.
 */
export function commandEnv(env: Record<string, string>, gateway?: GatewayEndpoints): Record<string, string> {
  const endpoints: Record<string, string> = {};
  if (gateway?.openaiBaseUrl) {
    endpoints.OPENAI_BASE_URL = gateway.openaiBaseUrl;
    endpoints.OPENAI_API_BASE = gateway.openaiBaseUrl;
    endpoints.OPENAI_API_KEY = GATEWAY_PLACEHOLDER_KEY;
  }
  if (gateway?.httpProxy) {
    for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) endpoints[name] = gateway.httpProxy;
  }
  return { PATH: COMMAND_PATH, HOME: '/tmp', ...endpoints, ...env };
}

/** Splits a byte stream into lines, keeping at most `max` bytes of each. */
class LineSplitter {
  #parts: Buffer[] = [];
  #kept = 0;
  #total = 0;

  constructor(
    private readonly max: number,
    private readonly onLine: (text: string) => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      this.#add(chunk.subarray(start, nl < 0 ? chunk.length : nl));
      if (nl < 0) return;
      this.#line();
      start = nl + 1;
    }
  }

  end(): void {
    if (this.#total > 0) this.#line();
  }

  #add(part: Buffer): void {
    this.#total += part.length;
    const room = this.max - this.#kept;
    if (room <= 0 || part.length === 0) return;
    // copied, so a short slice does not keep a whole pipe chunk alive
    const kept = Buffer.from(part.subarray(0, room));
    this.#parts.push(kept);
    this.#kept += kept.length;
  }

  #line(): void {
    let text = Buffer.concat(this.#parts).toString('utf8');
    if (text.endsWith('\r')) text = text.slice(0, -1);
    if (this.#total > this.#kept) text += ` … [line cut at ${this.max} of ${this.#total} bytes]`;
    this.#parts = [];
    this.#kept = 0;
    this.#total = 0;
    this.onLine(text);
  }
}

export interface CommandSpec {
  /** argv; the first element is looked up in `env.PATH` unless it contains a slash. No shell. */
  command: string[];
  cwd: string;
  env: Record<string, string>;
  /** Written to the command's stdin, which is then closed; without it stdin is /dev/null. */
  stdin?: string;
  timeoutMs?: number;
  /** Aborting it stops the command: SIGTERM to its process group, SIGKILL after the grace. */
  signal: AbortSignal;
  onLine(stream: 'stdout' | 'stderr', text: string): void;
  /** Awaited after every chunk of output; reading pauses meanwhile, so the command is slowed, not buffered. */
  drain?: () => Promise<void>;
  killGraceMs?: number;
}

export interface CommandOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Stopped because `signal` aborted. */
  stopped: boolean;
}

/** The command could not be started at all (not found, not executable). */
export class CommandStartError extends Error {
  override readonly name = 'CommandStartError';
}

function startError(file: string, path: string, err: NodeJS.ErrnoException): CommandStartError {
  const where = file.includes('/') ? '' : ` in PATH ${path}`;
  if (err.code === 'ENOENT')
    return new CommandStartError(`cannot start command "${file}": it was not found${where} (ENOENT)`, { cause: err });
  if (err.code === 'EACCES') return new CommandStartError(`cannot start command "${file}": permission denied (EACCES)`, { cause: err });
  return new CommandStartError(`cannot start command "${file}": ${err.message}`, { cause: err });
}

/**
 * Runs a command without a shell, detached in its own process group, line by line. Resolves
 * once it exited and its output was read; rejects with CommandStartError when it cannot start.
 * Whatever is left of its process group when it exits is killed: nobody would reap it.
 */
export async function runCommand(spec: CommandSpec): Promise<CommandOutcome> {
  const [file, ...args] = spec.command;
  if (file === undefined || file === '') throw new CommandStartError('the command is empty');
  const grace = spec.killGraceMs ?? KILL_GRACE_MS;
  const path = spec.env.PATH ?? '';
  if (spec.signal.aborted) return { code: null, signal: null, timedOut: false, stopped: true };
  // loaded on first use: most sessions run no command, and it costs ~10 ms of every boot
  const { spawn } = await import('node:child_process');
  return new Promise<CommandOutcome>((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(file, args, {
        cwd: spec.cwd,
        env: spec.env,
        detached: true,
        stdio: [spec.stdin !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      // bad arguments (a NUL byte) throw rather than emit
      reject(startError(file, path, err as NodeJS.ErrnoException));
      return;
    }
    let settled = false;
    let started = false;
    let exited = false;
    let timedOut = false;
    let stopped = false;
    let stopping = false;
    let killTimer: NodeJS.Timeout | undefined;
    let lingerTimer: NodeJS.Timeout | undefined;
    const timeoutTimer =
      spec.timeoutMs !== undefined
        ? setTimeout(() => {
            timedOut = true;
            stop();
          }, spec.timeoutMs)
        : undefined;

    const group = (sig: NodeJS.Signals | 0): boolean => {
      if (child.pid === undefined) return false;
      try {
        process.kill(-child.pid, sig);
        return true;
      } catch {
        return false; // ESRCH: the group is gone
      }
    };
    function stop(): void {
      if (stopping || exited) return;
      stopping = true;
      group('SIGTERM');
      killTimer = setTimeout(() => {
        if (group(0)) group('SIGKILL');
      }, grace);
    }
    const onAbort = () => {
      stopped = true;
      stop();
    };
    const cleanup = () => {
      settled = true;
      clearTimeout(timeoutTimer);
      clearTimeout(killTimer);
      clearTimeout(lingerTimer);
      spec.signal.removeEventListener('abort', onAbort);
    };

    child.once('spawn', () => {
      started = true;
      if (spec.signal.aborted) onAbort();
      else spec.signal.addEventListener('abort', onAbort, { once: true });
    });
    child.once('error', (err: NodeJS.ErrnoException) => {
      if (settled || started) return;
      cleanup();
      reject(startError(file, path, err));
    });

    for (const name of ['stdout', 'stderr'] as const) {
      const stream = child[name];
      if (!stream) continue;
      const lines = new LineSplitter(MAX_LINE_BYTES, (text) => spec.onLine(name, text));
      stream.on('data', (chunk: Buffer) => {
        lingerTimer?.refresh();
        lines.push(chunk);
        if (!spec.drain) return;
        stream.pause();
        void spec.drain().then(() => {
          lingerTimer?.refresh();
          stream.resume();
        });
      });
      stream.on('end', () => lines.end());
      stream.on('error', () => {});
    }
    if (spec.stdin !== undefined && child.stdin) {
      child.stdin.on('error', () => {}); // EPIPE: the command did not read its input
      child.stdin.end(spec.stdin);
    }

    child.once('exit', () => {
      if (settled) return;
      exited = true;
      clearTimeout(timeoutTimer);
      clearTimeout(killTimer);
      group('SIGKILL');
      // a process that left the group may hold the pipes open: stop reading after a while
      lingerTimer = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }, LINGER_MS);
    });
    child.once('close', (code: number | null, sig: NodeJS.Signals | null) => {
      if (settled) return;
      cleanup();
      resolve({ code, signal: sig, timedOut, stopped });
    });
  });
}

/** The agent events a command may write natively on stdout, one JSON object per line. */
const NATIVE_TYPES: ReadonlySet<string> = new Set(['MESSAGE', 'TOOL_CALL', 'TOOL_RESULT', 'LOG', 'FILE_CHANGED', 'ERROR']);
type NativeType = Exclude<AgentEventType, 'START' | 'FINISH'>;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * `{"type":"MESSAGE","data":{...}}` on stdout is that event. START, FINISH and platform
 * types are not: the runner alone decides how a session starts and ends.
 */
export function parseNativeEvent(line: string): { type: NativeType; data: Record<string, unknown> } | undefined {
  const trimmed = line.trim();
  if (!trimmed.startsWith('{') || !trimmed.endsWith('}')) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(trimmed);
  } catch {
    return undefined;
  }
  if (!isRecord(parsed) || typeof parsed.type !== 'string' || !NATIVE_TYPES.has(parsed.type) || !isRecord(parsed.data)) return undefined;
  return { type: parsed.type as NativeType, data: parsed.data };
}

export interface ExecOptions {
  command: string[];
  timeoutSeconds?: number;
  stdin?: string;
  /** Names of session secrets to hand to the command as environment variables. */
  secretEnv?: string[];
}

const EXEC_KEYS = ['command', 'timeoutSeconds', 'stdin', 'secretEnv'];

/** Checks the options against the schema by hand (the runner bundle carries no validator). */
export function parseExecOptions(o: Record<string, unknown>): ExecOptions {
  const unknown = Object.keys(o).filter((k) => !EXEC_KEYS.includes(k));
  if (unknown.length > 0) throw new Error(`exec: unknown option ${JSON.stringify(unknown[0])}; known: ${EXEC_KEYS.join(', ')}`);
  const { command, timeoutSeconds, stdin } = o;
  if (!Array.isArray(command) || command.length === 0 || !command.every((a) => typeof a === 'string')) {
    throw new Error('exec: options.command must be a non-empty array of strings, e.g. ["/usr/local/bin/node", "agent.js"]');
  }
  if (command[0] === '') throw new Error('exec: options.command[0] (the program) is empty');
  const out: ExecOptions = { command: command };
  if (timeoutSeconds !== undefined) {
    if (typeof timeoutSeconds !== 'number' || !Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) {
      throw new Error('exec: options.timeoutSeconds must be a positive number');
    }
    out.timeoutSeconds = timeoutSeconds;
  }
  if (stdin !== undefined) {
    if (typeof stdin !== 'string') throw new Error('exec: options.stdin must be a string');
    out.stdin = stdin;
  }
  const { secretEnv } = o;
  if (secretEnv !== undefined) {
    if (!Array.isArray(secretEnv) || !secretEnv.every((n) => typeof n === 'string' && /^[A-Z_][A-Z0-9_]{0,63}$/.test(n))) {
      throw new Error('exec: options.secretEnv must be an array of secret names (upper-case letters, digits, _)');
    }
    out.secretEnv = secretEnv as string[];
  }
  return out;
}

/** Turns how a command ended into the framework's result. */
export function commandResult(outcome: CommandOutcome, timeoutSeconds: number | undefined): FrameworkResult {
  if (outcome.stopped) return { status: 'failed', reason: 'agent_error', message: 'command stopped: the session was stopped' };
  if (outcome.timedOut) return { status: 'failed', reason: 'agent_error', message: `command timed out after ${timeoutSeconds} s` };
  if (outcome.code === 0) return { status: 'succeeded' };
  if (outcome.code !== null) return { status: 'failed', reason: 'agent_error', message: `command exited with code ${outcome.code}` };
  return { status: 'failed', reason: 'agent_error', message: `command was killed by signal ${outcome.signal ?? 'unknown'}` };
}

/**
 * Runs any program as the agent (an agent CLI in a derived image). Its output lines become
 * LOG events; stdout lines in the mgx NDJSON event format become those events.
 */
export const execFramework: Framework = {
  name: 'exec',
  description:
    'Runs a command (argv, no shell) in the workspace. stdout/stderr lines become LOG events; a stdout line {"type":"MESSAGE|TOOL_CALL|TOOL_RESULT|LOG|FILE_CHANGED|ERROR","data":{...}} becomes that event. Exit code 0 succeeds.',
  optionsSchema: {
    type: 'object',
    properties: {
      command: {
        type: 'array',
        items: { type: 'string' },
        minItems: 1,
        description: 'argv; the program is looked up in /usr/local/bin:/usr/bin:/bin',
      },
      timeoutSeconds: { type: 'number', exclusiveMinimum: 0, description: 'stop the command after this long (SIGTERM, SIGKILL 5 s later)' },
      stdin: { type: 'string', description: "written to the command's stdin; without it stdin is empty" },
      secretEnv: {
        type: 'array',
        items: { type: 'string' },
        description: "session secrets passed to the command as environment variables (e.g. an agent CLI's API key); never stored",
      },
    },
    required: ['command'],
    additionalProperties: false,
  },
  secretsWanted: (options) => {
    const names = options.secretEnv;
    return Array.isArray(names) ? names.filter((n): n is string => typeof n === 'string') : [];
  },
  async run(ctx: FrameworkContext): Promise<FrameworkResult> {
    const opts = parseExecOptions(ctx.options);
    // secrets last: a session env cannot shadow them, and they never appear in stored env
    const secretVars: Record<string, string> = {};
    const missing: string[] = [];
    for (const name of opts.secretEnv ?? []) {
      const value = ctx.secrets[name];
      if (value === undefined) missing.push(name);
      else secretVars[name] = value;
    }
    if (missing.length > 0)
      return {
        status: 'failed',
        reason: 'agent_error',
        message: `exec: the session has no secret ${missing.join(', ')} (options.secretEnv)`,
      };
    let outcome: CommandOutcome;
    try {
      outcome = await runCommand({
        command: opts.command,
        cwd: ctx.workspace,
        env: { ...commandEnv(ctx.env, ctx.gateway), ...secretVars },
        ...(opts.stdin !== undefined ? { stdin: opts.stdin } : {}),
        ...(opts.timeoutSeconds !== undefined ? { timeoutMs: opts.timeoutSeconds * 1000 } : {}),
        signal: ctx.signal,
        drain: () => ctx.emit.drain(),
        onLine: (stream, text) => {
          const native = stream === 'stdout' ? parseNativeEvent(text) : undefined;
          if (native) ctx.emit.emit(native.type, native.data);
          else ctx.emit.log(text, stream);
        },
      });
    } catch (err) {
      if (err instanceof CommandStartError) return { status: 'failed', reason: 'agent_error', message: err.message };
      throw err;
    }
    return commandResult(outcome, opts.timeoutSeconds);
  },
};
