import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Emitter, SessionEvent } from '@mgx/agent-sdk';
import { openaiFramework } from '../src/frameworks/openai.js';
import { runSessionOnHost as runSessionOnHost_, type RunInput } from './host-session.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

// ---------------------------------------------------------------------------------------
// A scripted OpenAI-compatible endpoint on 127.0.0.1, port 0

interface Scripted {
  status?: number;
  headers?: Record<string, string>;
  /** Written piece by piece, so the client sees chunks split anywhere. */
  pieces: string[];
  /** Keep the response open after the pieces (to test aborting). */
  hang?: boolean;
}

interface Recorded {
  url: string;
  headers: IncomingHttpHeaders;
  body: {
    model: string;
    stream: boolean;
    temperature?: number;
    messages: Array<Record<string, unknown>>;
    tools: Array<{ function: { name: string } }>;
  };
}

async function scriptedServer(script: Scripted[]) {
  const requests: Recorded[] = [];
  const server = createServer((req, res) => void answer(req, res));
  async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let raw = '';
    for await (const c of req) raw += String(c);
    requests.push({ url: req.url ?? '', headers: req.headers, body: JSON.parse(raw) as Recorded['body'] });
    // the last reply repeats (for the step limit)
    const reply = script[requests.length - 1] ?? script.at(-1)!;
    res.writeHead(reply.status ?? 200, reply.headers ?? { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    for (const piece of reply.pieces) {
      res.write(piece);
      await new Promise((r) => setTimeout(r, 2));
    }
    if (!reply.hang) res.end();
  }
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  return { baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, requests };
}

/** An SSE reply of these chunks, then [DONE], cut into pieces of `split` characters. */
function sse(chunks: unknown[], { split = 0, done = true }: { split?: number; done?: boolean } = {}): Scripted {
  const text = chunks.map((c) => `data: ${typeof c === 'string' ? c : JSON.stringify(c)}\n\n`).join('') + (done ? 'data: [DONE]\n\n' : '');
  if (split <= 0) return { pieces: [text] };
  const pieces: string[] = [];
  for (let i = 0; i < text.length; i += split) pieces.push(text.slice(i, i + split));
  return { pieces };
}

const chunk = (delta: Record<string, unknown>, finish: string | null = null) => ({
  id: 'chatcmpl-1',
  object: 'chat.completion.chunk',
  model: 'test-model',
  choices: [{ index: 0, delta, finish_reason: finish }],
});
const text = (content: string) => chunk({ content });
const call = (index: number, p: { id?: string; name?: string; args?: string }) =>
  chunk({
    tool_calls: [
      {
        index,
        ...(p.id ? { id: p.id, type: 'function' } : {}),
        function: { ...(p.name ? { name: p.name } : {}), ...(p.args !== undefined ? { arguments: p.args } : {}) },
      },
    ],
  });
/** One whole tool call in one chunk. */
const callWhole = (index: number, id: string, name: string, args: unknown) => call(index, { id, name, args: JSON.stringify(args) });
const stop = (reason: string) => chunk({}, reason);

// ---------------------------------------------------------------------------------------
// One real session on the host: real IngestHub over a unix socket, SQLite store, runSession in-process

const runSessionOnHost = (framework: string, input: RunInput = {}) =>
  runSessionOnHost_(framework, input, { prompt: 'do the task', network: 'egress' }, (undo) => cleanups.push(undo));

const finishOf = (events: SessionEvent[]) => events.at(-1)!;
const ofType = (events: SessionEvent[], type: string) => events.filter((e) => e.type === type).map((e) => e.data);
const agentTypes = (events: SessionEvent[]) => events.map((e) => e.type).filter((t) => t !== 'SESSION_QUEUED');

describe('openai framework against a scripted OpenAI-compatible endpoint', () => {
  it('streams the answer as MESSAGE deltas and a final message, and succeeds', async () => {
    const api = await scriptedServer([
      sse([chunk({ role: 'assistant', content: '' }), text('Hello'), text(', wor'), text('ld!'), stop('stop')], { split: 7 }),
    ]);
    const { code, events } = await runSessionOnHost('openai', {
      prompt: 'say hello',
      options: { baseUrl: `${api.baseUrl}/`, model: 'test-model', systemPrompt: 'be brief', temperature: 0.2 },
    });
    expect(code).toBe(0);
    expect(agentTypes(events)).toEqual(['START', 'MESSAGE', 'MESSAGE', 'MESSAGE', 'MESSAGE', 'FINISH']);
    expect(ofType(events, 'MESSAGE')).toEqual([
      { messageId: 'm1', role: 'assistant', delta: 'Hello' },
      { messageId: 'm1', role: 'assistant', delta: ', wor' },
      { messageId: 'm1', role: 'assistant', delta: 'ld!' },
      { messageId: 'm1', role: 'assistant', text: 'Hello, world!', done: true },
    ]);
    expect(finishOf(events).data).toMatchObject({ status: 'succeeded', reason: 'finished' });
    expect(api.requests).toHaveLength(1);
    const req = api.requests[0]!;
    expect(req.url).toBe('/v1/chat/completions');
    expect(req.headers.authorization).toBeUndefined();
    expect(req.body).toMatchObject({
      model: 'test-model',
      stream: true,
      temperature: 0.2,
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'say hello' },
      ],
    });
    expect(req.body.tools.map((t) => t.function.name)).toEqual(['read_file', 'write_file', 'list_files', 'run_command']);
  });

  it('runs a tool-call turn: tool calls assembled by index, file really written, then read back, then the answer', async () => {
    const api = await scriptedServer([
      // two calls whose pieces interleave, as a model streaming parallel tool calls does
      sse([
        call(0, { id: 'call_w', name: 'write_file', args: '' }),
        call(1, { id: 'call_l', name: 'list_files', args: '' }),
        call(0, { args: '{"path":"notes/' }),
        call(1, { args: '{}' }),
        call(0, { args: 'a.txt","content":"hello' }),
        call(0, { args: ' tools"}' }),
        stop('tool_calls'),
      ]),
      sse([text('Let me check. '), callWhole(0, 'call_r', 'read_file', { path: 'notes/a.txt' }), stop('tool_calls')]),
      sse([text('Done: the file says hello tools.'), stop('stop')]),
    ]);
    const { events, workspace } = await runSessionOnHost('openai', { options: { baseUrl: api.baseUrl, model: 'm' } });
    expect(finishOf(events).data).toMatchObject({ status: 'succeeded', reason: 'finished' });
    expect(readFileSync(join(workspace, 'notes', 'a.txt'), 'utf8')).toBe('hello tools');
    expect(agentTypes(events)).toEqual([
      'START',
      'TOOL_CALL',
      'FILE_CHANGED',
      'TOOL_RESULT',
      'TOOL_CALL',
      'TOOL_RESULT',
      'MESSAGE',
      'MESSAGE',
      'TOOL_CALL',
      'TOOL_RESULT',
      'MESSAGE',
      'MESSAGE',
      'FINISH',
    ]);
    expect(ofType(events, 'TOOL_CALL')).toEqual([
      { id: 'call_w', name: 'write_file', arguments: { path: 'notes/a.txt', content: 'hello tools' } },
      { id: 'call_l', name: 'list_files', arguments: {} },
      { id: 'call_r', name: 'read_file', arguments: { path: 'notes/a.txt' } },
    ]);
    expect(ofType(events, 'FILE_CHANGED')).toEqual([{ path: 'notes/a.txt', bytes: 11, change: 'written' }]);
    expect(ofType(events, 'TOOL_RESULT')).toEqual([
      { id: 'call_w', name: 'write_file', ok: true, output: 'wrote 11 bytes to notes/a.txt' },
      { id: 'call_l', name: 'list_files', ok: true, output: 'notes/\nnotes/a.txt' },
      { id: 'call_r', name: 'read_file', ok: true, output: 'hello tools' },
    ]);
    expect(
      ofType(events, 'MESSAGE')
        .filter((m) => m.done)
        .map((m) => [m.messageId, m.text]),
    ).toEqual([
      ['m2', 'Let me check. '],
      ['m3', 'Done: the file says hello tools.'],
    ]);
    // the conversation sent back: the assistant's tool calls, then one tool message per call
    expect(api.requests).toHaveLength(3);
    expect(api.requests[1]!.body.messages.slice(2)).toEqual([
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'call_w', type: 'function', function: { name: 'write_file', arguments: '{"path":"notes/a.txt","content":"hello tools"}' } },
          { id: 'call_l', type: 'function', function: { name: 'list_files', arguments: '{}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_w', content: 'wrote 11 bytes to notes/a.txt' },
      { role: 'tool', tool_call_id: 'call_l', content: 'notes/\nnotes/a.txt' },
    ]);
    expect(api.requests[2]!.body.messages.at(-1)).toEqual({ role: 'tool', tool_call_id: 'call_r', content: 'hello tools' });
  });

  it('refuses paths that leave the workspace (.., absolute, symbolic links) as failed tool results, and does nothing', async () => {
    let outside = '';
    const api = await scriptedServer([
      sse([
        callWhole(0, 'c1', 'read_file', { path: '../../etc/passwd' }),
        callWhole(1, 'c2', 'read_file', { path: '/etc/passwd' }),
        callWhole(2, 'c3', 'write_file', { path: '../escaped.txt', content: 'x' }),
        callWhole(3, 'c4', 'write_file', { path: 'link/evil.txt', content: 'x' }),
        callWhole(4, 'c5', 'read_file', { path: 'link/secret.txt' }),
        callWhole(5, 'c6', 'list_files', { path: '..' }),
        callWhole(6, 'c7', 'write_file', { path: 'dangling', content: 'x' }),
        stop('tool_calls'),
      ]),
      sse([text('I cannot.'), stop('stop')]),
    ]);
    const { events, dir } = await runSessionOnHost('openai', {
      options: { baseUrl: api.baseUrl, model: 'm' },
      setup: (workspace, base) => {
        outside = join(base, 'outside');
        mkdirSync(outside);
        writeFileSync(join(outside, 'secret.txt'), 'outside secret');
        symlinkSync(outside, join(workspace, 'link'));
        symlinkSync(join(outside, 'nothing-here'), join(workspace, 'dangling'));
      },
    });
    expect(finishOf(events).data).toMatchObject({ status: 'succeeded' });
    const results = ofType(events, 'TOOL_RESULT');
    expect(results.map((r) => [r.id, r.ok])).toEqual([
      ['c1', false],
      ['c2', false],
      ['c3', false],
      ['c4', false],
      ['c5', false],
      ['c6', false],
      ['c7', false],
    ]);
    expect(results.map((r) => r.output)).toEqual([
      'path "../../etc/passwd" is outside the workspace',
      'path "/etc/passwd" is absolute; give a path relative to the workspace',
      'path "../escaped.txt" is outside the workspace',
      'path "link/evil.txt" leads outside the workspace through a symbolic link',
      'path "link/secret.txt" leads outside the workspace through a symbolic link',
      'path ".." is outside the workspace',
      'path "dangling" goes through a symbolic link to a missing target',
    ]);
    expect(ofType(events, 'FILE_CHANGED')).toEqual([]);
    expect(readdirSync(outside)).toEqual(['secret.txt']);
    expect(existsSync(join(dir, 'escaped.txt'))).toBe(false);
    const stored = JSON.stringify(events);
    expect(stored).not.toContain('root:');
    expect(stored).not.toContain('outside secret');
  });

  it('runs commands without a shell, and answers unknown tools and bad arguments with failed results', async () => {
    const api = await scriptedServer([
      sse([
        callWhole(0, 'r1', 'run_command', {
          command: [process.execPath, '-e', 'console.log("out"); console.error("err"); process.exit(2)'],
        }),
        callWhole(1, 'r2', 'run_command', { command: ['no-such-command-mgx'] }),
        callWhole(2, 'r3', 'run_command', { command: 'echo hi; rm -rf /' }),
        callWhole(3, 'r4', 'delete_everything', {}),
        call(4, { id: 'r5', name: 'read_file', args: '{"path": ' }),
        callWhole(5, 'r6', '__proto__', {}),
        stop('tool_calls'),
      ]),
      sse([text('ok'), stop('stop')]),
    ]);
    const { events } = await runSessionOnHost('openai', { options: { baseUrl: api.baseUrl, model: 'm' } });
    expect(finishOf(events).data).toMatchObject({ status: 'succeeded' });
    const results = ofType(events, 'TOOL_RESULT');
    expect(results[0]).toMatchObject({ id: 'r1', ok: false });
    expect(String(results[0]!.output).split('\n').sort()).toEqual(['err', 'exit code 2', 'out']);
    expect(results.slice(1).map((r) => [r.ok, r.output])).toEqual([
      [false, 'cannot start command "no-such-command-mgx": it was not found in PATH /usr/local/bin:/usr/bin:/bin (ENOENT)'],
      [false, 'command must be a non-empty array of strings (argv; there is no shell)'],
      [false, 'unknown tool "delete_everything"; the tools are read_file, write_file, list_files, run_command'],
      [false, 'the arguments are not valid JSON'],
      [false, 'unknown tool "__proto__"; the tools are read_file, write_file, list_files, run_command'],
    ]);
    expect(ofType(events, 'TOOL_CALL')[4]).toEqual({ id: 'r5', name: 'read_file', arguments: '{"path": ' });
  });

  it('ends failed with the HTTP status and a body excerpt when the endpoint answers an error', async () => {
    const api = await scriptedServer([
      {
        status: 500,
        headers: { 'content-type': 'application/json' },
        pieces: ['{"error":{"message":"upstream exploded: the model is overloaded"}}'],
      },
    ]);
    const { code, events } = await runSessionOnHost('openai', { options: { baseUrl: api.baseUrl, model: 'm' } });
    expect(code).toBe(1);
    expect(finishOf(events).data).toMatchObject({
      status: 'failed',
      reason: 'agent_error',
      message:
        'the model endpoint answered HTTP 500 Internal Server Error: {"error":{"message":"upstream exploded: the model is overloaded"}}',
    });
  });

  it('ends failed on a malformed response: a data line that is not JSON, a chunk without choices', async () => {
    const notJson = await scriptedServer([sse([text('partial '), '{not json'])]);
    const a = await runSessionOnHost('openai', { options: { baseUrl: notJson.baseUrl, model: 'm' } });
    expect(finishOf(a.events).data).toMatchObject({
      status: 'failed',
      reason: 'agent_error',
      message: 'malformed response from the model endpoint: a data line is not JSON: {not json',
    });
    const noChoices = await scriptedServer([sse([{ id: 'x', object: 'chat.completion.chunk' }])]);
    const b = await runSessionOnHost('openai', { options: { baseUrl: noChoices.baseUrl, model: 'm' } });
    expect(finishOf(b.events).data).toMatchObject({
      status: 'failed',
      message: 'malformed response from the model endpoint: a chunk has no "choices" array',
    });
    const empty = await scriptedServer([{ pieces: [] }]);
    const c = await runSessionOnHost('openai', { options: { baseUrl: empty.baseUrl, model: 'm' } });
    expect(finishOf(c.events).data).toMatchObject({
      status: 'failed',
      message: 'malformed response from the model endpoint: the stream ended without any data',
    });
  });

  it('ends failed with a clear message when the endpoint cannot be reached, or the options are bad', async () => {
    // a port that was just free: nothing listens there
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const down = await runSessionOnHost('openai', { options: { baseUrl: `http://127.0.0.1:${port}/v1`, model: 'm' } });
    expect(finishOf(down.events).data).toMatchObject({
      status: 'failed',
      reason: 'agent_error',
      message: `cannot reach the model endpoint http://127.0.0.1:${port}/v1/chat/completions: connect ECONNREFUSED 127.0.0.1:${port}`,
    });
    const bad = await runSessionOnHost('openai', { options: { baseUrl: 'ftp://x', model: 'm' } });
    expect(finishOf(bad.events).data).toMatchObject({ status: 'failed', message: 'openai: options.baseUrl must be an http or https URL' });
    const noModel = await runSessionOnHost('openai', { options: { baseUrl: 'http://127.0.0.1:1' } });
    expect(finishOf(noModel.events).data).toMatchObject({
      status: 'failed',
      message: 'openai: options.model is required (a non-empty string)',
    });
  });

  it('with a provider, fails plainly on a server that offers no model gateway, and never sends OPENAI_API_KEY for it', async () => {
    // this host session offers no model.sock, as a server without MGX_MODEL_PROVIDERS
    const { events } = await runSessionOnHost('openai', { options: { provider: 'main', model: 'm' } });
    expect(finishOf(events).data).toMatchObject({
      status: 'failed',
      message: 'openai: this server offers no model gateway to the session (options.provider "main")',
    });
    expect(openaiFramework.secretsWanted?.({ provider: 'main', model: 'm' }, '')).toEqual([]);
    expect(openaiFramework.secretsWanted?.({ baseUrl: 'https://x/v1', model: 'm' }, '')).toEqual(['OPENAI_API_KEY']);
    const both = await runSessionOnHost('openai', { options: { provider: 'main', baseUrl: 'https://x/v1', model: 'm' } });
    expect(finishOf(both.events).data).toMatchObject({ message: 'openai: give options.provider or options.baseUrl, not both' });
  });

  it('stops at the step limit with a failed FINISH that says so', async () => {
    const api = await scriptedServer([sse([callWhole(0, 'l', 'list_files', {}), stop('tool_calls')])]);
    const { events } = await runSessionOnHost('openai', { options: { baseUrl: api.baseUrl, model: 'm', maxSteps: 2 } });
    expect(api.requests).toHaveLength(2);
    expect(ofType(events, 'TOOL_RESULT')).toHaveLength(2);
    expect(finishOf(events).data).toMatchObject({
      status: 'failed',
      reason: 'agent_error',
      message: 'the step limit of 2 was reached before the model gave a final answer (options.maxSteps)',
    });
  });

  it('sends the API key from secrets as a bearer token and keeps it out of every stored event, even when the endpoint echoes it', async () => {
    const KEY = 'sk-test-SECRET-0123456789abcdef';
    const api = await scriptedServer([
      // the key echoed in content split across deltas, in tool arguments, and in a file the model reads
      sse([
        text('your key is sk-te'),
        text('st-SECRET-0123'),
        text(`456789abcdef, and again ${KEY}.`),
        callWhole(0, 'w', 'write_file', { path: 'key-copy.txt', content: `key=${KEY}` }),
        callWhole(1, 'r', 'read_file', { path: 'key.txt' }),
        stop('tool_calls'),
      ]),
      {
        status: 401,
        headers: { 'content-type': 'application/json' },
        pieces: [`{"error":{"message":"Incorrect API key provided: ${KEY}. You can find your API key at https://example.invalid."}}`],
      },
    ]);
    const { events, workspace } = await runSessionOnHost('openai', {
      options: { baseUrl: api.baseUrl, model: 'm' },
      secrets: { OPENAI_API_KEY: KEY },
      setup: (ws) => writeFileSync(join(ws, 'key.txt'), `the key is ${KEY}\n`),
    });
    expect(api.requests.map((r) => r.headers.authorization)).toEqual([`Bearer ${KEY}`, `Bearer ${KEY}`]);
    const stored = JSON.stringify(events);
    expect(stored).not.toContain(KEY);
    expect(stored).not.toContain('SECRET-0123');
    const deltas = ofType(events, 'MESSAGE')
      .filter((m) => m.delta !== undefined)
      .map((m) => m.delta)
      .join('');
    expect(deltas).toBe('your key is [REDACTED], and again [REDACTED].');
    expect(ofType(events, 'MESSAGE').find((m) => m.done)?.text).toBe('your key is [REDACTED], and again [REDACTED].');
    expect(ofType(events, 'TOOL_CALL')[0]).toEqual({
      id: 'w',
      name: 'write_file',
      arguments: { path: 'key-copy.txt', content: 'key=[REDACTED]' },
    });
    expect(ofType(events, 'TOOL_RESULT')[1]).toMatchObject({ ok: true, output: 'the key is [REDACTED]\n' });
    // the workspace itself is the agent's: the file holds what the model asked for
    expect(readFileSync(join(workspace, 'key-copy.txt'), 'utf8')).toBe(`key=${KEY}`);
    expect(finishOf(events).data).toMatchObject({
      status: 'failed',
      reason: 'agent_error',
      message: expect.stringContaining(
        'HTTP 401 Unauthorized (check the secret OPENAI_API_KEY): {"error":{"message":"Incorrect API key provided: [REDACTED]. You can',
      ),
    });
  });

  it('aborts the request when the session is stopped', async () => {
    const api = await scriptedServer([{ ...sse([text('thinking…')], { done: false }), hang: true }]);
    const deltas: string[] = [];
    const emit: Emitter = {
      emit: () => {},
      messageDelta: (_id, d) => void deltas.push(d),
      messageDone: () => {},
      log: () => {},
      drain: async () => {},
    };
    const ac = new AbortController();
    const dir = mkdtempSync(join(tmpdir(), 'mgx-openai-abort-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const running = openaiFramework.run({
      sessionId: 's',
      prompt: 'p',
      workspace: dir,
      options: { baseUrl: api.baseUrl, model: 'm' },
      env: {},
      secrets: {},
      emit,
      signal: ac.signal,
    });
    const until = Date.now() + 10_000;
    while (deltas.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    expect(deltas).toEqual(['thinking…']);
    const t0 = Date.now();
    ac.abort();
    await expect(running).resolves.toEqual({ status: 'failed', reason: 'agent_error', message: 'stopped: the session was stopped' });
    expect(Date.now() - t0).toBeLessThan(1000);
  });
});
