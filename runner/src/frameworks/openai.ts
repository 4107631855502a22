import { lstat, mkdir, open, readdir, realpath, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { redactor, type Framework, type FrameworkContext, type FrameworkResult, type Redactor } from '@mgx/agent-sdk';
import { commandEnv, CommandStartError, runCommand } from './exec.js';

/** Tool output handed to the model and stored in TOOL_RESULT is cut here. */
export const MAX_TOOL_OUTPUT_BYTES = 16 * 1024;
const MAX_LIST_ENTRIES = 1000;
const DEFAULT_COMMAND_TIMEOUT_S = 60;
const MAX_COMMAND_TIMEOUT_S = 600;
/** An SSE line or event longer than this is a broken (or hostile) endpoint, not a reply. */
const MAX_SSE_EVENT_CHARS = 8 * 1024 * 1024;

const DEFAULT_SYSTEM_PROMPT = [
  'You are a coding agent working in a workspace directory.',
  'Use the tools to list, read and write files and to run commands; paths are relative to the workspace.',
  'run_command takes an argv array and runs it without a shell.',
  'When the task is done, answer with a short summary and no tool call.',
].join(' ');

export interface OpenAIOptions {
  /** The endpoint, for a direct call; empty with `provider` (the gateway's loopback endpoint is used). */
  baseUrl: string;
  /** A model provider of the server: calls go through its gateway, which holds the key. */
  provider?: string;
  model: string;
  maxSteps: number;
  systemPrompt?: string;
  temperature?: number;
}

const OPENAI_KEYS = ['baseUrl', 'provider', 'model', 'maxSteps', 'systemPrompt', 'temperature'];

/** Checks the options against the schema by hand (the runner bundle carries no validator). */
export function parseOpenAIOptions(o: Record<string, unknown>): OpenAIOptions {
  const unknown = Object.keys(o).filter((k) => !OPENAI_KEYS.includes(k));
  if (unknown.length > 0) throw new Error(`openai: unknown option ${JSON.stringify(unknown[0])}; known: ${OPENAI_KEYS.join(', ')}`);
  const { baseUrl, provider, model, maxSteps, systemPrompt, temperature } = o;
  if (provider !== undefined) {
    if (typeof provider !== 'string' || !/^[a-z0-9][a-z0-9_-]{0,31}$/.test(provider))
      throw new Error('openai: options.provider must name a model provider of the server');
    if (baseUrl !== undefined) throw new Error('openai: give options.provider or options.baseUrl, not both');
  } else {
    if (typeof baseUrl !== 'string' || baseUrl === '')
      throw new Error('openai: options.baseUrl (or options.provider) is required, e.g. "https://api.openai.com/v1"');
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new Error('openai: options.baseUrl is not a URL');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('openai: options.baseUrl must be an http or https URL');
  }
  if (typeof model !== 'string' || model === '') throw new Error('openai: options.model is required (a non-empty string)');
  const out: OpenAIOptions = {
    baseUrl: typeof baseUrl === 'string' ? baseUrl.replace(/\/+$/, '') : '',
    ...(typeof provider === 'string' ? { provider } : {}),
    model,
    maxSteps: 20,
  };
  if (maxSteps !== undefined) {
    if (typeof maxSteps !== 'number' || !Number.isInteger(maxSteps) || maxSteps < 1 || maxSteps > 1000) {
      throw new Error('openai: options.maxSteps must be an integer from 1 to 1000');
    }
    out.maxSteps = maxSteps;
  }
  if (systemPrompt !== undefined) {
    if (typeof systemPrompt !== 'string') throw new Error('openai: options.systemPrompt must be a string');
    out.systemPrompt = systemPrompt;
  }
  if (temperature !== undefined) {
    if (typeof temperature !== 'number' || !Number.isFinite(temperature) || temperature < 0 || temperature > 2) {
      throw new Error('openai: options.temperature must be a number from 0 to 2');
    }
    out.temperature = temperature;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Keeping the API key out of everything the session stores: every event, message and error
// passes through the key's redactor (a no-op without a key).

interface ApiKey {
  value: string | undefined;
  redact: Redactor;
}

// ---------------------------------------------------------------------------------------
// Bounded text

function cutBytes(text: string, max: number): string {
  const bytes = Buffer.byteLength(text);
  if (bytes <= max) return text;
  // a cut inside a multi-byte character decodes to U+FFFD; that is fine for a preview
  return `${Buffer.from(text).subarray(0, max).toString('utf8')}\n… [cut at ${max} of ${bytes} bytes]`;
}

const excerpt = (text: string, max = 300) => {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
};

// ---------------------------------------------------------------------------------------
// The workspace, as the tools see it

class ToolError extends Error {
  override readonly name = 'ToolError';
}

const isInside = (root: string, path: string) => path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);

/**
 * Resolves paths the model gives inside the workspace. Absolute paths and `..` escapes are
 * refused outright; what exists of the path is resolved through its symbolic links, and
 * must still be inside, so a link pointing out of the workspace is no way out either.
 */
class Workspace {
  #root: Promise<string> | undefined;
  constructor(private readonly dir: string) {}

  root(): Promise<string> {
    this.#root ??= realpath(this.dir);
    return this.#root;
  }

  async resolve(path: unknown, allowRoot = false): Promise<{ abs: string; rel: string }> {
    if (typeof path !== 'string' || path === '') throw new ToolError('path must be a non-empty string');
    if (path.includes('\0')) throw new ToolError('path contains a NUL byte');
    if (isAbsolute(path)) throw new ToolError(`path ${JSON.stringify(path)} is absolute; give a path relative to the workspace`);
    const root = await this.root();
    const abs = resolve(root, path);
    const rel = relative(root, abs);
    if (rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel))
      throw new ToolError(`path ${JSON.stringify(path)} is outside the workspace`);
    if (rel === '' && !allowRoot) throw new ToolError(`path ${JSON.stringify(path)} is the workspace itself, not a file in it`);
    // the deepest part of the path that exists decides where it really leads
    for (let probe = abs; ; probe = dirname(probe)) {
      let real: string;
      try {
        real = await realpath(probe);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT') throw new ToolError(`path ${JSON.stringify(path)}: ${(err as Error).message}`);
        if (
          await lstat(probe).then(
            (s) => s.isSymbolicLink(),
            () => false,
          )
        ) {
          throw new ToolError(`path ${JSON.stringify(path)} goes through a symbolic link to a missing target`);
        }
        if (probe === root) throw new ToolError('the workspace is missing');
        continue;
      }
      if (!isInside(root, real)) throw new ToolError(`path ${JSON.stringify(path)} leads outside the workspace through a symbolic link`);
      break;
    }
    return { abs, rel: rel || '.' };
  }
}

// ---------------------------------------------------------------------------------------
// Tools

const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'read_file',
      description: `Read a text file of the workspace (at most ${MAX_TOOL_OUTPUT_BYTES} bytes are returned).`,
      parameters: {
        type: 'object',
        properties: { path: { type: 'string', description: 'relative to the workspace' } },
        required: ['path'],
        additionalProperties: false,
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'write_file',
      description: 'Create or replace a file of the workspace with the given content; missing directories are created.',
      parameters: {
        type: 'object',
        properties: { path: { type: 'string', description: 'relative to the workspace' }, content: { type: 'string' } },
        required: ['path', 'content'],
        additionalProperties: false,
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'list_files',
      description: 'List the files under a directory of the workspace, recursively (directories end with /).',
      parameters: {
        type: 'object',
        properties: { path: { type: 'string', description: 'relative to the workspace; default "."' } },
        additionalProperties: false,
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'run_command',
      description: 'Run a program in the workspace without a shell and return its exit code and output (stdout and stderr).',
      parameters: {
        type: 'object',
        properties: {
          command: { type: 'array', items: { type: 'string' }, minItems: 1, description: 'argv, e.g. ["node", "test.js"]' },
          timeoutSeconds: { type: 'number', description: `default ${DEFAULT_COMMAND_TIMEOUT_S}, at most ${MAX_COMMAND_TIMEOUT_S}` },
        },
        required: ['command'],
        additionalProperties: false,
      },
    },
  },
];

interface ToolOutcome {
  ok: boolean;
  output: string;
}

interface ToolEnv {
  ctx: FrameworkContext;
  ws: Workspace;
  /** Emits FILE_CHANGED (redacted). */
  fileChanged(data: Record<string, unknown>): void;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

async function readFileTool(env: ToolEnv, args: Record<string, unknown>): Promise<ToolOutcome> {
  const { abs, rel } = await env.ws.resolve(args.path);
  const st = await stat(abs).catch(() => undefined);
  if (!st) throw new ToolError(`${rel} does not exist`);
  if (st.isDirectory()) throw new ToolError(`${rel} is a directory; use list_files`);
  if (!st.isFile()) throw new ToolError(`${rel} is not a regular file`);
  const fh = await open(abs, 'r');
  try {
    // never more than the bound into memory, whatever the file's size
    const buf = Buffer.alloc(Math.min(st.size, MAX_TOOL_OUTPUT_BYTES));
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const text = buf.subarray(0, bytesRead).toString('utf8');
    return { ok: true, output: st.size > bytesRead ? `${text}\n… [cut at ${bytesRead} of ${st.size} bytes]` : text };
  } finally {
    await fh.close();
  }
}

async function writeFileTool(env: ToolEnv, args: Record<string, unknown>): Promise<ToolOutcome> {
  if (typeof args.content !== 'string') throw new ToolError('content must be a string');
  const { abs, rel } = await env.ws.resolve(args.path);
  await mkdir(dirname(abs), { recursive: true });
  await writeFile(abs, args.content);
  const bytes = Buffer.byteLength(args.content);
  env.fileChanged({ path: rel, bytes, change: 'written' });
  return { ok: true, output: `wrote ${bytes} bytes to ${rel}` };
}

async function listFilesTool(env: ToolEnv, args: Record<string, unknown>): Promise<ToolOutcome> {
  const { abs, rel } = await env.ws.resolve(args.path ?? '.', true);
  const st = await stat(abs).catch(() => undefined);
  if (!st) throw new ToolError(`${rel} does not exist`);
  if (!st.isDirectory()) throw new ToolError(`${rel} is not a directory`);
  const out: string[] = [];
  let more = false;
  const walk = async (dir: string, prefix: string): Promise<void> => {
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name));
    for (const e of entries) {
      if (out.length >= MAX_LIST_ENTRIES) {
        more = true;
        return;
      }
      const name = prefix + e.name;
      if (e.isDirectory()) {
        out.push(`${name}/`);
        // large and rarely what the model needs; listed, not entered
        if (e.name !== '.git' && e.name !== 'node_modules') await walk(join(dir, e.name), `${name}/`);
      } else out.push(e.isSymbolicLink() ? `${name} (symbolic link)` : name);
    }
  };
  await walk(abs, '');
  if (out.length === 0) return { ok: true, output: `${rel} is empty` };
  if (more) out.push(`… [stopped after ${MAX_LIST_ENTRIES} entries]`);
  return { ok: true, output: out.join('\n') };
}

async function runCommandTool(env: ToolEnv, args: Record<string, unknown>): Promise<ToolOutcome> {
  const { command } = args;
  if (!Array.isArray(command) || command.length === 0 || !command.every((a) => typeof a === 'string') || command[0] === '') {
    throw new ToolError('command must be a non-empty array of strings (argv; there is no shell)');
  }
  let timeoutS = DEFAULT_COMMAND_TIMEOUT_S;
  if (args.timeoutSeconds !== undefined) {
    if (typeof args.timeoutSeconds !== 'number' || !(args.timeoutSeconds > 0))
      throw new ToolError('timeoutSeconds must be a positive number');
    timeoutS = Math.min(args.timeoutSeconds, MAX_COMMAND_TIMEOUT_S);
  }
  const lines: string[] = [];
  let kept = 0;
  let cut = 0;
  try {
    const outcome = await runCommand({
      command: command,
      cwd: await env.ws.root(),
      env: commandEnv(env.ctx.env, env.ctx.gateway),
      timeoutMs: timeoutS * 1000,
      signal: env.ctx.signal,
      onLine: (_stream, text) => {
        // keeps the head only: bounded however much the command prints
        const size = Buffer.byteLength(text) + 1;
        if (kept + size > MAX_TOOL_OUTPUT_BYTES) cut += size;
        else {
          lines.push(text);
          kept += size;
        }
      },
    });
    const status = outcome.timedOut
      ? `timed out after ${timeoutS} s`
      : outcome.code !== null
        ? `exit code ${outcome.code}`
        : `killed by signal ${outcome.signal ?? 'unknown'}`;
    const tail = cut > 0 ? `\n… [${cut} more bytes of output cut]` : '';
    return { ok: outcome.code === 0 && !outcome.timedOut, output: `${status}\n${lines.join('\n')}${tail}` };
  } catch (err) {
    if (err instanceof CommandStartError) throw new ToolError(err.message);
    throw err;
  }
}

const TOOL_IMPLS = new Map<string, (env: ToolEnv, args: Record<string, unknown>) => Promise<ToolOutcome>>([
  ['read_file', readFileTool],
  ['write_file', writeFileTool],
  ['list_files', listFilesTool],
  ['run_command', runCommandTool],
]);

// ---------------------------------------------------------------------------------------
// The chat-completions endpoint

/** Ends the session failed, with a message that is safe to store. */
class EndpointError extends Error {
  override readonly name = 'EndpointError';
}

interface ToolCall {
  id: string;
  name: string;
  arguments: string;
}

interface Reply {
  content: string;
  toolCalls: ToolCall[];
}

type ChatMessage =
  | { role: 'system' | 'user'; content: string }
  | {
      role: 'assistant';
      content: string | null;
      tool_calls?: Array<{ id: string; type: 'function'; function: { name: string; arguments: string } }>;
    }
  | { role: 'tool'; tool_call_id: string; content: string };

/** The `data` payloads of a server-sent event stream, one per event. */
async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let data: string[] = [];
  let dataChars = 0;
  const line = (raw: string): string | undefined => {
    const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (text === '') {
      if (data.length === 0) return undefined;
      const event = data.join('\n');
      data = [];
      dataChars = 0;
      return event;
    }
    if (text.startsWith(':')) return undefined; // comment (keep-alive)
    const colon = text.indexOf(':');
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') {
      data.push(value);
      dataChars += value.length;
      if (dataChars > MAX_SSE_EVENT_CHARS)
        throw new EndpointError(`malformed response from the model endpoint: an event is longer than ${MAX_SSE_EVENT_CHARS} characters`);
    }
    return undefined;
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      buf += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const event = line(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (event !== undefined) yield event;
      }
      if (buf.length > MAX_SSE_EVENT_CHARS)
        throw new EndpointError(`malformed response from the model endpoint: a line is longer than ${MAX_SSE_EVENT_CHARS} characters`);
      if (done) {
        // a stream may end without the blank line that closes its last event
        const last = buf !== '' ? line(buf) : undefined;
        if (last !== undefined) yield last;
        const rest = line('');
        if (rest !== undefined) yield rest;
        return;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** Reads at most `max` bytes of a body, as text; `cut` when there was more. */
async function readSome(res: Response, max: number): Promise<{ text: string; cut: boolean }> {
  if (!res.body) return { text: '', cut: false };
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < max) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      size += value.length;
    }
  } catch {
    // what arrived is enough for an error message
  } finally {
    await reader.cancel().catch(() => {});
  }
  return { text: Buffer.concat(parts).subarray(0, max).toString('utf8'), cut: size >= max };
}

/** Collects one assistant reply from stream chunks; tool calls arrive in pieces, by index. */
class ReplyBuilder {
  content = '';
  readonly #calls = new Map<number, ToolCall>();
  chunks = 0;

  /** Applies one chunk; returns the content it added. */
  apply(chunk: unknown): string {
    this.chunks++;
    if (!isRecord(chunk)) throw new EndpointError('malformed response from the model endpoint: a chunk is not a JSON object');
    if (chunk.error !== undefined) {
      const e = chunk.error;
      const msg = isRecord(e) && typeof e.message === 'string' ? e.message : JSON.stringify(e);
      throw new EndpointError(`the model endpoint reported an error: ${excerpt(msg)}`);
    }
    if (!Array.isArray(chunk.choices))
      throw new EndpointError('malformed response from the model endpoint: a chunk has no "choices" array');
    // one completion was asked for; a usage chunk at the end has no choices
    const choice: unknown = chunk.choices[0];
    if (choice === undefined) return '';
    if (!isRecord(choice)) throw new EndpointError('malformed response from the model endpoint: a choice is not an object');
    const delta = choice.delta ?? choice.message;
    if (delta === undefined || delta === null) return '';
    if (!isRecord(delta)) throw new EndpointError('malformed response from the model endpoint: a delta is not an object');
    let added = '';
    if (typeof delta.content === 'string') {
      added = delta.content;
      this.content += added;
    }
    if (delta.tool_calls !== undefined && delta.tool_calls !== null) {
      if (!Array.isArray(delta.tool_calls))
        throw new EndpointError('malformed response from the model endpoint: tool_calls is not an array');
      delta.tool_calls.forEach((tc: unknown, position: number) => {
        if (!isRecord(tc)) throw new EndpointError('malformed response from the model endpoint: a tool call is not an object');
        const index = typeof tc.index === 'number' ? tc.index : position;
        let call = this.#calls.get(index);
        if (!call) {
          call = { id: '', name: '', arguments: '' };
          this.#calls.set(index, call);
        }
        if (typeof tc.id === 'string' && tc.id !== '') call.id = tc.id;
        const fn = tc.function;
        if (isRecord(fn)) {
          if (typeof fn.name === 'string') call.name += fn.name;
          if (typeof fn.arguments === 'string') call.arguments += fn.arguments;
        }
      });
    }
    return added;
  }

  reply(step: number): Reply {
    const toolCalls = [...this.#calls.entries()].sort(([a], [b]) => a - b).map(([, c], i) => ({ ...c, id: c.id || `call_${step}_${i}` }));
    return { content: this.content, toolCalls };
  }
}

/**
 * A tool-using agent against any OpenAI-compatible chat-completions endpoint: it streams the
 * model's answer, runs the tools the model calls inside the workspace, and loops until the
 * model answers without a tool call.
 */
export const openaiFramework: Framework = {
  name: 'openai',
  description:
    "Tool-using agent against an OpenAI-compatible chat-completions endpoint (streamed). Tools: read_file, write_file, list_files, run_command, confined to the workspace. With options.provider the server's model gateway makes the calls (no network, no key in the container); with options.baseUrl the agent calls it itself (network egress, secret OPENAI_API_KEY).",
  requiresEgress: true,
  secretsWanted: (options) => (options.provider !== undefined ? [] : ['OPENAI_API_KEY']),
  optionsSchema: {
    type: 'object',
    properties: {
      baseUrl: { type: 'string', description: 'e.g. https://api.openai.com/v1; POST {baseUrl}/chat/completions' },
      provider: {
        type: 'string',
        description: "a model provider of the server (MGX_MODEL_PROVIDERS), instead of baseUrl: the server's gateway holds the key",
      },
      model: { type: 'string' },
      maxSteps: { type: 'integer', minimum: 1, maximum: 1000, default: 20, description: 'model requests at most' },
      systemPrompt: { type: 'string' },
      temperature: { type: 'number', minimum: 0, maximum: 2 },
    },
    required: ['model'],
    additionalProperties: false,
  },
  async run(ctx: FrameworkContext): Promise<FrameworkResult> {
    const value = ctx.secrets.OPENAI_API_KEY || undefined;
    const key: ApiKey = { value, redact: redactor([value]) };
    try {
      return await agentLoop(ctx, key);
    } catch (err) {
      if (ctx.signal.aborted) return { status: 'failed', reason: 'agent_error', message: 'stopped: the session was stopped' };
      const message = err instanceof Error ? err.message : String(err);
      return { status: 'failed', reason: 'agent_error', message: key.redact.text(message) };
    }
  },
};

async function agentLoop(ctx: FrameworkContext, key: ApiKey): Promise<FrameworkResult> {
  const opts = parseOpenAIOptions(ctx.options);
  if (opts.provider !== undefined) {
    // through the session's socket: the host picks the provider's endpoint and adds its key
    const gateway = ctx.gateway?.openaiBaseUrl;
    if (!gateway)
      throw new EndpointError(`openai: this server offers no model gateway to the session (options.provider "${opts.provider}")`);
    opts.baseUrl = gateway;
  }
  const ws = new Workspace(ctx.workspace);
  const toolEnv: ToolEnv = { ctx, ws, fileChanged: (data) => ctx.emit.emit('FILE_CHANGED', key.redact.deep(data)) };
  const messages: ChatMessage[] = [
    { role: 'system', content: opts.systemPrompt ?? DEFAULT_SYSTEM_PROMPT },
    { role: 'user', content: ctx.prompt },
  ];
  for (let step = 1; step <= opts.maxSteps; step++) {
    const reply = await complete(ctx, opts, key, messages, step);
    if (reply.toolCalls.length === 0) return { status: 'succeeded' };
    messages.push({
      role: 'assistant',
      content: reply.content === '' ? null : reply.content,
      tool_calls: reply.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })),
    });
    for (const call of reply.toolCalls) {
      if (ctx.signal.aborted) throw new Error('stopped');
      let args: unknown;
      let argsError: string | undefined;
      try {
        args = call.arguments.trim() === '' ? {} : JSON.parse(call.arguments);
        if (!isRecord(args)) argsError = 'the arguments are not a JSON object';
      } catch {
        argsError = 'the arguments are not valid JSON';
      }
      ctx.emit.emit('TOOL_CALL', key.redact.deep({ id: call.id, name: call.name, arguments: argsError ? call.arguments : args }));
      let result: ToolOutcome;
      const impl = TOOL_IMPLS.get(call.name);
      if (argsError) result = { ok: false, output: argsError };
      else if (!impl)
        result = { ok: false, output: `unknown tool ${JSON.stringify(call.name)}; the tools are ${[...TOOL_IMPLS.keys()].join(', ')}` };
      else {
        try {
          result = await impl(toolEnv, args as Record<string, unknown>);
        } catch (err) {
          if (ctx.signal.aborted) throw err;
          result = { ok: false, output: err instanceof ToolError ? err.message : `${call.name} failed: ${(err as Error).message}` };
        }
      }
      const output = cutBytes(result.output, MAX_TOOL_OUTPUT_BYTES);
      ctx.emit.emit('TOOL_RESULT', key.redact.deep({ id: call.id, name: call.name, ok: result.ok, output }));
      messages.push({ role: 'tool', tool_call_id: call.id, content: output });
    }
    await ctx.emit.drain();
  }
  return {
    status: 'failed',
    reason: 'agent_error',
    message: `the step limit of ${opts.maxSteps} was reached before the model gave a final answer (options.maxSteps)`,
  };
}

/** One request: streams the reply's text as MESSAGE deltas and returns it with its tool calls. */
async function complete(ctx: FrameworkContext, opts: OpenAIOptions, key: ApiKey, messages: ChatMessage[], step: number): Promise<Reply> {
  const url = `${opts.baseUrl}/chat/completions`;
  const body = {
    model: opts.model,
    messages,
    stream: true,
    tools: TOOLS,
    ...(opts.temperature !== undefined ? { temperature: opts.temperature } : {}),
  };
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'text/event-stream',
        ...(key.value ? { authorization: `Bearer ${key.value}` } : {}),
        ...(opts.provider !== undefined ? { 'x-mgx-provider': opts.provider } : {}),
      },
      body: JSON.stringify(body),
      signal: ctx.signal,
    });
  } catch (err) {
    if (ctx.signal.aborted) throw err;
    const cause = (err as { cause?: unknown }).cause;
    const why = cause instanceof Error ? cause.message : (err as Error).message;
    throw new EndpointError(`cannot reach the model endpoint ${url}: ${why}`);
  }
  if (!res.ok) {
    const some = await readSome(res, 4096);
    const text = some.cut ? key.redact.excerpt(some.text) : key.redact.text(some.text);
    const hint = res.status === 401 || res.status === 403 ? ' (check the secret OPENAI_API_KEY)' : '';
    throw new EndpointError(
      `the model endpoint answered HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}${hint}: ${excerpt(text) || '(empty body)'}`,
    );
  }

  const messageId = `m${step}`;
  const stream = key.redact.stream();
  const builder = new ReplyBuilder();
  const say = (piece: string) => {
    const safe = stream.push(piece);
    if (safe !== '') ctx.emit.messageDelta(messageId, safe);
  };
  const contentType = res.headers.get('content-type') ?? '';
  if (contentType.includes('application/json')) {
    // an endpoint that ignores `stream: true` answers with the whole completion
    let whole: unknown;
    try {
      whole = JSON.parse(await res.text());
    } catch {
      throw new EndpointError('malformed response from the model endpoint: the body is not JSON');
    }
    say(builder.apply(whole));
  } else {
    if (!res.body) throw new EndpointError('malformed response from the model endpoint: no body');
    let sawDone = false;
    for await (const data of sseData(res.body)) {
      if (data.trim() === '[DONE]') {
        sawDone = true;
        break;
      }
      let chunk: unknown;
      try {
        chunk = JSON.parse(data);
      } catch {
        throw new EndpointError(
          `malformed response from the model endpoint: a data line is not JSON: ${excerpt(key.redact.text(data), 120)}`,
        );
      }
      const added = builder.apply(chunk);
      if (added !== '') say(added);
      await ctx.emit.drain();
    }
    if (!sawDone && builder.chunks === 0)
      throw new EndpointError('malformed response from the model endpoint: the stream ended without any data');
  }
  const rest = stream.end();
  if (rest !== '') ctx.emit.messageDelta(messageId, rest);
  const reply = builder.reply(step);
  if (reply.content !== '') ctx.emit.messageDone(messageId, key.redact.text(reply.content));
  return reply;
}
