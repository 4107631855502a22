import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One answer of the fake model: text, or tool calls; `before` is awaited before answering. */
export interface FakeReply {
  text?: string;
  toolCalls?: Array<{ name: string; args: unknown }>;
  promptTokens?: number;
  completionTokens?: number;
  before?: () => Promise<void>;
}

export interface FakeRequest {
  authorization: string | undefined;
  path: string;
  body: Record<string, unknown>;
}

/**
 * An OpenAI-compatible chat-completions server on 127.0.0.1, port 0: it answers each request
 * with the next scripted reply (the last one repeats), streamed as server-sent events when the
 * request asks for a stream (usage in a last chunk when stream_options.include_usage), else as
 * one JSON completion. It records every request's Authorization header and body.
 */
export async function fakeOpenAI(initial: FakeReply[] = []) {
  const requests: FakeRequest[] = [];
  let replies = initial;
  let answered = 0;
  const server = createServer((req, res) => void answer(req, res));
  async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let raw = '';
    for await (const c of req) raw += String(c);
    const body = JSON.parse(raw || '{}') as Record<string, unknown>;
    requests.push({ authorization: req.headers.authorization, path: req.url ?? '', body });
    const reply = replies[answered++] ?? replies.at(-1) ?? { text: 'done' };
    await reply.before?.();
    const usage = { prompt_tokens: reply.promptTokens ?? 100, completion_tokens: reply.completionTokens ?? 20 };
    const usageOut = { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens };
    const toolCalls = (reply.toolCalls ?? []).map((c, i) => ({
      index: i,
      id: `call_${answered}_${i}`,
      type: 'function',
      function: { name: c.name, arguments: JSON.stringify(c.args) },
    }));
    const model = typeof body.model === 'string' ? body.model : 'fake';
    if (body.stream !== true) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          id: 'chatcmpl-fake',
          object: 'chat.completion',
          model,
          choices: [
            {
              index: 0,
              message: { role: 'assistant', content: reply.text ?? null, ...(toolCalls.length ? { tool_calls: toolCalls } : {}) },
              finish_reason: toolCalls.length ? 'tool_calls' : 'stop',
            },
          ],
          usage: usageOut,
        }),
      );
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const send = (chunk: unknown) => res.write(`data: ${JSON.stringify(chunk)}\n\n`);
    const chunk = (delta: Record<string, unknown>, finish: string | null = null) => ({
      id: 'chatcmpl-fake',
      object: 'chat.completion.chunk',
      model,
      choices: [{ index: 0, delta, finish_reason: finish }],
    });
    send(chunk({ role: 'assistant', content: '' }));
    // text in two pieces, tool calls split between name and arguments, as real streams do
    if (reply.text) {
      const half = Math.ceil(reply.text.length / 2);
      send(chunk({ content: reply.text.slice(0, half) }));
      send(chunk({ content: reply.text.slice(half) }));
    }
    for (const c of toolCalls) {
      send(chunk({ tool_calls: [{ index: c.index, id: c.id, type: 'function', function: { name: c.function.name, arguments: '' } }] }));
      send(chunk({ tool_calls: [{ index: c.index, function: { arguments: c.function.arguments } }] }));
    }
    send(chunk({}, toolCalls.length ? 'tool_calls' : 'stop'));
    const options = body.stream_options as { include_usage?: boolean } | undefined;
    if (options?.include_usage) send({ id: 'chatcmpl-fake', object: 'chat.completion.chunk', model, choices: [], usage: usageOut });
    res.end('data: [DONE]\n\n');
  }
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    port,
    requests,
    /** Scripts the next requests and forgets those recorded so far. */
    reset(next: FakeReply[]) {
      replies = next;
      answered = 0;
      requests.length = 0;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
