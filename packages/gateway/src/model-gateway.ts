import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { redactor, type EventType, type ModelCallData, type ModelUsage } from '@mgx/agent-sdk';
import { silentLogger, type Logger, type ModelProvider } from '@mgx/config';
import type { Metrics } from '@mgx/metrics';

/** What the gateway knows of a session it serves: whose it is and its budgets (absent: none). */
export interface GatewaySession {
  id: string;
  tenant: string;
  maxModelTokens?: number | undefined;
  maxModelCalls?: number | undefined;
  /** The session asked for its calls' content in MODEL_CALL (recordModelContent). */
  recordContent?: boolean | undefined;
}

/** An event the gateway writes in a session's stream. */
export interface PlatformEvent {
  rid: 0;
  type: EventType;
  ts: number;
  data: Record<string, unknown>;
}

export interface ModelGatewayOptions {
  providers: ModelProvider[];
  metrics: Metrics;
  logger?: Logger;
  /**
   * Stores events in the session's stream, in order with its runner's (ingest's `record`);
   * false when the stream is closed (the session ended).
   */
  record(sessionId: string, events: PlatformEvent[]): Promise<boolean>;
  /** A call was refused past a budget: the session ends `budget_exceeded` (called once per session). */
  budgetExceeded(sessionId: string, message: string): void;
  /** Largest request body taken from an agent. */
  maxBodyBytes?: number;
}

interface SessionState extends GatewaySession {
  usage: ModelUsage;
  exceeded: boolean;
}

/** The error body OpenAI's API answers with, so agent CLIs show the message. */
const apiError = (res: ServerResponse, status: number, type: string, message: string) => {
  if (res.headersSent) return void res.end();
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: { message, type, code: type } }));
};

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Prompt and completion tokens from an OpenAI `usage` object; zeros when absent. */
function tokensOf(usage: unknown): { prompt: number; completion: number } | undefined {
  if (!isRecord(usage)) return undefined;
  const n = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.round(v) : 0);
  return { prompt: n(usage.prompt_tokens), completion: n(usage.completion_tokens) };
}

/** How much of a call's content a MODEL_CALL carries, each way (events have a size limit). */
const CONTENT_BYTES = 32 * 1024;

/** `value` as JSON within CONTENT_BYTES, or a clipped string of it. */
function clipped(value: unknown): { value: unknown; truncated: boolean } {
  const json = JSON.stringify(value ?? null);
  return json.length <= CONTENT_BYTES ? { value, truncated: false } : { value: json.slice(0, CONTENT_BYTES), truncated: true };
}

/** The answer's text and tool calls from a whole chat-completions response. */
function answerOf(parsed: unknown): { content: string; toolCalls?: unknown } {
  const choice = isRecord(parsed) && Array.isArray(parsed.choices) ? (parsed.choices[0] as unknown) : undefined;
  const message = isRecord(choice) && isRecord(choice.message) ? choice.message : {};
  return {
    content: typeof message.content === 'string' ? message.content : '',
    ...(message.tool_calls !== undefined ? { toolCalls: message.tool_calls } : {}),
  };
}

/**
 * Watches a server-sent event stream go by for its `usage` (the last chunk with
 * stream_options.include_usage) and, when asked, the answer's text and tool-call deltas.
 */
class UsageTap {
  #buf = '';
  usage: { prompt: number; completion: number } | undefined;
  content = '';
  toolCalls: unknown[] = [];
  constructor(readonly keepContent = false) {}
  push(text: string): void {
    this.#buf += text;
    let nl: number;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (!line.startsWith('data:') || !(this.keepContent || line.includes('"usage"'))) continue;
      try {
        const chunk: unknown = JSON.parse(line.slice(5));
        const t = isRecord(chunk) ? tokensOf(chunk.usage) : undefined;
        if (t) this.usage = t;
        if (this.keepContent && this.content.length <= CONTENT_BYTES) {
          const delta = isRecord(chunk) && Array.isArray(chunk.choices) && isRecord(chunk.choices[0]) ? chunk.choices[0].delta : undefined;
          if (isRecord(delta) && typeof delta.content === 'string') this.content += delta.content;
          if (isRecord(delta) && Array.isArray(delta.tool_calls)) this.toolCalls.push(...(delta.tool_calls as unknown[]));
        }
      } catch {
        // not JSON: the agent gets it as it is; nothing to count
      }
    }
    // a line this long is not an SSE line worth reading for usage
    if (this.#buf.length > 1024 * 1024) this.#buf = '';
  }
}

/**
 * The model gateway: an OpenAI-compatible chat-completions endpoint on each session's
 * model.sock. The container reaches it without any network and holds no key; the worker
 * picks the provider, adds the provider's key, makes the call, streams the answer back, and
 * counts the call's tokens against the session's budget. Every call becomes a MODEL_CALL
 * event: counts, never its content unless the session asked (recordModelContent).
 */
export class ModelGateway {
  readonly #o: ModelGatewayOptions & { logger: Logger; maxBodyBytes: number };
  readonly #sessions = new Map<string, SessionState>();
  readonly #bySocket = new WeakMap<Socket, string>();
  readonly #http: Server;
  readonly #redact;

  constructor(options: ModelGatewayOptions) {
    this.#o = { logger: silentLogger, maxBodyBytes: 16 * 1024 * 1024, ...options };
    this.#redact = redactor(options.providers.map((p) => p.key.reveal()));
    this.#http = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        this.#o.logger.error({ err: this.#redact.text(String(err)) }, 'model gateway request failed');
        apiError(res, 500, 'gateway_error', 'the model gateway failed');
      });
    });
    this.#http.on('clientError', (_err, socket) => socket.destroy());
  }

  /** The providers `tenant` may use. */
  providersFor(tenant: string): ModelProvider[] {
    return this.#o.providers.filter((p) => !p.tenants || p.tenants.includes(tenant));
  }

  /** Serves a session from now on (before its socket opens). */
  admit(session: GatewaySession): void {
    if (this.#sessions.has(session.id)) return;
    this.#sessions.set(session.id, {
      ...session,
      usage: { calls: 0, promptTokens: 0, completionTokens: 0, refused: 0 },
      exceeded: false,
    });
  }

  /** Whether a session gets model.sock: it is served here and its tenant has a provider. */
  offers(task: { sessionId: string }): boolean {
    const s = this.#sessions.get(task.sessionId);
    return s !== undefined && this.providersFor(s.tenant).length > 0;
  }

  /** A connection on a session's model.sock. */
  accept(sessionId: string, socket: Socket): void {
    this.#bySocket.set(socket, sessionId);
    this.#http.emit('connection', socket);
  }

  /** The session's token totals so far; undefined when it made no call. */
  usage(sessionId: string): ModelUsage | undefined {
    const s = this.#sessions.get(sessionId);
    return s && (s.usage.calls > 0 || s.usage.refused > 0) ? { ...s.usage } : undefined;
  }

  /**
   * Carries on the totals of a session taken over after a restart (its last MODEL_CALL's), so
   * its budget counts what it used before; calls made here since are added on top.
   */
  resume(sessionId: string, before: ModelUsage): void {
    const s = this.#sessions.get(sessionId);
    if (!s) return;
    s.usage.calls += before.calls;
    s.usage.promptTokens += before.promptTokens;
    s.usage.completionTokens += before.completionTokens;
    s.usage.refused += before.refused;
  }

  forget(sessionId: string): void {
    this.#sessions.delete(sessionId);
  }

  close(): void {
    this.#http.closeAllConnections();
    this.#http.close();
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const sessionId = this.#bySocket.get(req.socket);
    const session = sessionId !== undefined ? this.#sessions.get(sessionId) : undefined;
    if (!session) return apiError(res, 410, 'session_ended', 'this session is not served by the gateway (it has ended)');
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (req.method === 'GET' && (path === '/v1/models' || path === '/models')) {
      const data = this.providersFor(session.tenant).flatMap((p) =>
        p.models.filter((m) => m !== '*').map((m) => ({ id: m, object: 'model', owned_by: p.name })),
      );
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end(JSON.stringify({ object: 'list', data }));
    }
    if (req.method !== 'POST' || (path !== '/v1/chat/completions' && path !== '/chat/completions')) {
      return apiError(res, 404, 'not_found', `the gateway serves POST /v1/chat/completions and GET /v1/models, not ${req.method} ${path}`);
    }
    const raw = await readBody(req, this.#o.maxBodyBytes);
    if (raw === undefined) return apiError(res, 413, 'request_too_large', `the request is over ${this.#o.maxBodyBytes} bytes`);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      return apiError(res, 400, 'invalid_request_error', 'the request body is not JSON');
    }
    if (!isRecord(body) || typeof body.model !== 'string' || body.model === '') {
      return apiError(res, 400, 'invalid_request_error', 'the request names no model');
    }
    const header = req.headers['x-mgx-provider'];
    const route = this.#route(session.tenant, body.model, typeof header === 'string' ? header : undefined);
    const stream = body.stream === true;
    if ('error' in route) {
      this.#o.metrics.modelRefusals.inc({ reason: 'model' });
      session.usage.refused++;
      this.#recordCall(session, {
        provider: route.provider ?? '',
        model: body.model.slice(0, 128),
        status: 'refused',
        httpStatus: 404,
        promptTokens: 0,
        completionTokens: 0,
        latencyMs: 0,
        stream,
        message: route.error,
      });
      return apiError(res, 404, 'model_not_found', route.error);
    }
    const { provider, model } = route;
    const label = { provider: provider.name, model: provider.models.includes(model) ? model : '*' };
    const over = this.#overBudget(session);
    if (over) {
      this.#o.metrics.modelRefusals.inc({ reason: 'budget' });
      this.#o.metrics.modelCalls.inc({ provider: provider.name, status: 'refused' });
      session.usage.refused++;
      this.#recordCall(session, {
        provider: provider.name,
        model,
        status: 'refused',
        httpStatus: 429,
        promptTokens: 0,
        completionTokens: 0,
        latencyMs: 0,
        stream,
        message: over,
      });
      apiError(res, 429, 'budget_exceeded', over);
      if (!session.exceeded) {
        session.exceeded = true;
        this.#o.budgetExceeded(session.id, over);
      }
      return;
    }
    // counted before the answer: calls made side by side cannot all slip under the limit
    session.usage.calls++;
    const upstreamBody = {
      ...body,
      model,
      ...(stream ? { stream_options: { ...asRecord(body.stream_options), include_usage: true } } : {}),
    };
    const ac = new AbortController();
    res.on('close', () => ac.abort());
    const t0 = performance.now();
    const call: ModelCallData = {
      provider: provider.name,
      model,
      status: 'error',
      httpStatus: 502,
      promptTokens: 0,
      completionTokens: 0,
      latencyMs: 0,
      stream,
    };
    if (session.recordContent === true) {
      const messages = clipped(body.messages);
      const tools = body.tools !== undefined ? clipped(body.tools) : undefined;
      call.request = {
        messages: messages.value,
        ...(tools ? { tools: tools.value } : {}),
        truncated: messages.truncated || tools?.truncated === true,
      };
    }
    try {
      const upstream = await fetch(`${provider.baseUrl}/chat/completions`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: stream ? 'text/event-stream' : 'application/json',
          authorization: `Bearer ${provider.key.reveal()}`,
        },
        body: JSON.stringify(upstreamBody),
        signal: ac.signal,
      });
      call.httpStatus = upstream.status;
      res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/json' });
      const tap = new UsageTap(session.recordContent === true);
      const decoder = new TextDecoder();
      const whole: string[] = [];
      const reader = upstream.body?.getReader();
      for (;;) {
        if (!reader) break;
        const { done, value: chunk } = await reader.read();
        if (done) break;
        {
          const text = decoder.decode(chunk, { stream: true });
          if (upstream.ok) {
            tap.push(text);
            if (!stream && whole.length < 10_000) whole.push(text);
            if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
          } else {
            // an error from the provider is passed on, without the key if it echoed it
            res.write(this.#redact.text(text));
          }
        }
      }
      res.end();
      let tokens = tap.usage;
      let answer: { content: string; toolCalls?: unknown } = {
        content: tap.content,
        ...(tap.toolCalls.length > 0 ? { toolCalls: tap.toolCalls } : {}),
      };
      if (!stream && upstream.ok) {
        try {
          const parsed: unknown = JSON.parse(whole.join(''));
          tokens = isRecord(parsed) ? tokensOf(parsed.usage) : undefined;
          answer = answerOf(parsed);
        } catch {
          tokens = undefined;
        }
      }
      if (session.recordContent === true && upstream.ok) {
        const text = answer.content.length > CONTENT_BYTES;
        const tools = answer.toolCalls !== undefined ? clipped(answer.toolCalls) : undefined;
        call.response = {
          content: text ? answer.content.slice(0, CONTENT_BYTES) : answer.content,
          ...(tools ? { toolCalls: tools.value } : {}),
          truncated: text || tools?.truncated === true,
        };
      }
      call.status = upstream.ok ? 'ok' : 'error';
      if (!upstream.ok) call.message = `the provider answered HTTP ${upstream.status}`;
      call.promptTokens = tokens?.prompt ?? 0;
      call.completionTokens = tokens?.completion ?? 0;
    } catch (err) {
      call.message = ac.signal.aborted
        ? 'the agent closed the connection before the answer ended'
        : `cannot reach the provider ${provider.name}: ${this.#redact.text(causeOf(err))}`;
      apiError(res, 502, 'provider_unreachable', call.message);
    } finally {
      call.latencyMs = Math.round(performance.now() - t0);
      session.usage.promptTokens += call.promptTokens;
      session.usage.completionTokens += call.completionTokens;
      const { metrics } = this.#o;
      metrics.modelCalls.inc({ provider: provider.name, status: call.status });
      metrics.modelCallDuration.observe(label, call.latencyMs / 1000);
      if (call.promptTokens > 0) metrics.modelTokens.inc({ ...label, kind: 'prompt' }, call.promptTokens);
      if (call.completionTokens > 0) metrics.modelTokens.inc({ ...label, kind: 'completion' }, call.completionTokens);
      this.#recordCall(session, call);
    }
  }

  /** Why the next call is refused, or undefined when the session is within its budgets. */
  #overBudget(s: SessionState): string | undefined {
    const used = s.usage.promptTokens + s.usage.completionTokens;
    if (s.maxModelCalls !== undefined && s.usage.calls >= s.maxModelCalls)
      return `the session used its ${s.maxModelCalls} model calls (maxModelCalls)`;
    if (s.maxModelTokens !== undefined && used >= s.maxModelTokens)
      return `the session used ${used} model tokens of its ${s.maxModelTokens} (maxModelTokens)`;
    return undefined;
  }

  /**
   * The provider and its model name for a request: the provider the agent names (header
   * x-mgx-provider, or a `provider/model` name), else the first of the tenant's providers that
   * lists the model, else the first that serves any model (`*`).
   */
  #route(
    tenant: string,
    requested: string,
    named: string | undefined,
  ): { provider: ModelProvider; model: string } | { error: string; provider?: string } {
    const mine = this.providersFor(tenant);
    let provider: ModelProvider | undefined;
    let model = requested;
    if (named !== undefined) {
      provider = mine.find((p) => p.name === named);
      if (!provider) return { error: `no model provider "${named}" for this session`, provider: named.slice(0, 32) };
    } else {
      const slash = requested.indexOf('/');
      const prefixed = slash > 0 ? mine.find((p) => p.name === requested.slice(0, slash)) : undefined;
      if (prefixed) {
        provider = prefixed;
        model = requested.slice(slash + 1);
      } else provider = mine.find((p) => p.models.includes(requested)) ?? mine.find((p) => p.models.includes('*'));
    }
    if (!provider) return { error: `no model provider serves "${requested}" for this session` };
    if (!provider.models.includes(model) && !provider.models.includes('*'))
      return {
        error: `provider ${provider.name} does not serve "${model}"; it serves ${provider.models.join(', ')}`,
        provider: provider.name,
      };
    return { provider, model };
  }

  #recordCall(s: SessionState, call: ModelCallData): void {
    void this.#o
      .record(s.id, [{ rid: 0, type: 'MODEL_CALL', ts: Date.now(), data: { ...call, total: { ...s.usage } } }])
      .then((stored) => {
        if (!stored) this.#o.logger.debug({ sessionId: s.id }, 'a model call ended after its session; not recorded');
      })
      .catch((err: unknown) => this.#o.logger.error({ err, sessionId: s.id }, 'recording a model call failed'));
  }
}

const asRecord = (v: unknown): Record<string, unknown> => (isRecord(v) ? v : {});

function causeOf(err: unknown): string {
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error ? cause.message : err instanceof Error ? err.message : String(err);
}

/** The whole body, or undefined past `max` bytes. */
async function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > max) return undefined;
    parts.push(b);
  }
  return Buffer.concat(parts);
}
