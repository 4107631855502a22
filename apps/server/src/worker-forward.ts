import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as netConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { connect as tlsConnect } from 'node:tls';
import { createTRPCUntypedClient, httpLink, TRPCClientError, type TRPCUntypedClient } from '@trpc/client';
import { TRPCError, type AnyRouter } from '@trpc/server';
import type { HolderCalls, HolderProcedure } from '@mgx/api';
import type { WorkerRecord, WorkerStore } from '@mgx/event-store';
import { forwardUpgrade, HOP_BY_HOP } from '@mgx/preview';

/**
 * Requests only one worker can answer (its workspaces' files, its sessions' previews) are
 * carried from the node that received them to the URL that worker advertises (MGX_WORKER_URL),
 * with the caller's credentials, which the worker checks again. This header marks them, so a
 * worker never forwards one a second time (a session or workspace that moved answers 502).
 */
export const FORWARDED = 'x-mgx-forwarded-by';

export interface ForwardOptions {
  /** This process's id, named in the FORWARDED header. */
  self: string;
  /** Keep the Host header the client sent (host-name previews are routed by it). */
  keepHost?: boolean;
  /** Answers a worker that did not answer (each route has its own error body). */
  unreachable: (res: ServerResponse, err: Error) => void;
}

function headersOf(req: IncomingMessage, o: ForwardOptions, upgrade: boolean): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || (k === 'host' && !o.keepHost)) continue;
    if (HOP_BY_HOP.has(k) && !(upgrade && (k === 'connection' || k === 'upgrade'))) continue;
    headers[k] = v;
  }
  headers[FORWARDED] = o.self;
  return headers;
}

/** Carries the request to the worker at `base` and its answer back, both streamed. */
export function forwardToWorker(req: IncomingMessage, res: ServerResponse, base: string, o: ForwardOptions): Promise<void> {
  const target = new URL(req.url ?? '/', base);
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<void>((resolve, reject) => {
    const upstream = send(target, { method: req.method ?? 'GET', headers: headersOf(req, o, false) }, (answer) => {
      const back: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(answer.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) back[k] = v;
      res.writeHead(answer.statusCode ?? 502, back);
      pipeline(answer, res).then(resolve, (err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE') resolve();
        else reject(err instanceof Error ? err : new Error(String(err)));
      });
    });
    upstream.on('error', (err) => {
      if (res.headersSent) return res.destroy(err);
      o.unreachable(res, err);
      resolve();
    });
    req.pipe(upstream);
  });
}

/** The same for an upgrade (a WebSocket): the head is sent as it came, then bytes both ways. */
export function forwardUpgradeToWorker(req: IncomingMessage, client: Duplex, head: Buffer, base: string, o: ForwardOptions): Promise<void> {
  const url = new URL(base);
  const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
  return new Promise<void>((resolve, reject) => {
    const s =
      url.protocol === 'https:' ? tlsConnect({ host: url.hostname, port, servername: url.hostname }) : netConnect(port, url.hostname);
    s.once(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
      const headers = Object.entries(headersOf(req, o, true)).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x]) : [[k, v]]));
      forwardUpgrade(req, client, head, s, req.url ?? '/', headers as [string, string][]);
      resolve();
    });
    s.once('error', reject);
  });
}

/**
 * The worker that answers for a workspace: its holder while that one is alive or draining and
 * advertises a URL; for a workspace nobody holds yet, any such live worker (its first write makes
 * that worker the holder). Else undefined, with why.
 */
export async function workerFor(workers: WorkerStore, holder: string | null): Promise<{ worker?: WorkerRecord; why: string }> {
  if (holder !== null) {
    const w = await workers.get(holder);
    if (w?.url && (w.state === 'alive' || w.state === 'draining')) return { worker: w, why: '' };
    return { why: w?.url ? `worker ${holder} is ${w.state}` : `worker ${holder} advertises no MGX_WORKER_URL to forward to` };
  }
  const live = (await workers.list()).filter((w) => w.state === 'alive' && w.url);
  const worker = live[Math.floor(Math.random() * live.length)];
  return worker ? { worker, why: '' } : { why: 'no live worker advertises an MGX_WORKER_URL to take a new workspace' };
}

const QUERIES: ReadonlySet<HolderProcedure> = new Set(['files', 'read', 'sizes']);

/**
 * Workspaces procedures run on the worker that holds the files, through its tRPC endpoint, as
 * the caller (the same Authorization header) and marked forwarded. A refusal there comes back
 * with its code and message; a worker that does not answer is SERVICE_UNAVAILABLE.
 */
export function holderCalls(workers: WorkerStore, self: string, timeoutMs = 30_000): HolderCalls {
  const clients = new Map<string, TRPCUntypedClient<AnyRouter>>();
  const clientOf = (url: string) => {
    let c = clients.get(url);
    if (!c) {
      c = createTRPCUntypedClient<AnyRouter>({
        links: [
          httpLink({
            url: `${url.replace(/\/+$/, '')}/trpc`,
            headers: ({ op }) => ({ ...(op.context.headers as Record<string, string>), [FORWARDED]: self }),
          }),
        ],
      });
      clients.set(url, c);
    }
    return c;
  };
  return {
    async call(holder, procedure, input, authorization) {
      const { worker, why } = await workerFor(workers, holder);
      if (!worker?.url) throw new TRPCError({ code: 'SERVICE_UNAVAILABLE', message: `the workspace's files cannot be reached: ${why}` });
      const client = clientOf(worker.url);
      const opts = { context: { headers: authorization ? { authorization } : {} }, signal: AbortSignal.timeout(timeoutMs) };
      const path = `workspaces.${procedure}`;
      try {
        return await (QUERIES.has(procedure) ? client.query(path, input, opts) : client.mutation(path, input, opts));
      } catch (err) {
        if (err instanceof TRPCClientError && typeof (err.data as { code?: unknown } | undefined)?.code === 'string') {
          throw new TRPCError({ code: (err.data as { code: TRPCError['code'] }).code, message: err.message });
        }
        throw new TRPCError({
          code: 'SERVICE_UNAVAILABLE',
          message: `worker ${worker.id}, which holds the workspace's files, did not answer: ${(err as Error).message}`,
        });
      }
    },
  };
}
