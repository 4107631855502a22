import { initTRPC, TRPCError } from '@trpc/server';
import type { ApiContext } from './context.js';
import { toTRPCError } from './errors.js';

export interface RouterOptions {
  /** SSE keep-alive interval; clients reconnect after 2.5 intervals of silence. */
  ssePingMs: number;
}

/** What an SSE stream's `connected` event tells the client: reconnect after 2.5 keep-alives of silence. */
export function sseClientOptions(ssePingMs: number): { reconnectAfterInactivityMs: number } {
  return { reconnectAfterInactivityMs: Math.max(5000, ssePingMs * 2.5) };
}

/**
 * The tRPC instance and its procedures. Built per server, so that the keep-alive comes from
 * the settings; the area routers take it as an argument.
 */
export function createTrpc(options: RouterOptions) {
  const t = initTRPC.context<ApiContext>().create({
    sse: {
      // keep-alive so proxies and clients can tell a quiet stream from a dead one
      ping: { enabled: true, intervalMs: options.ssePingMs },
      client: sseClientOptions(options.ssePingMs),
    },
  });

  /** Store and engine failures reach the client with their own code, not as a 500. */
  const mapErrors = t.middleware(async ({ next }) => {
    const result = await next();
    if (!result.ok) {
      const mapped = toTRPCError(result.error.cause);
      if (mapped) throw mapped;
    }
    return result;
  });

  const procedure = t.procedure.use(mapErrors);

  const authed = procedure.use(({ ctx, next }) => {
    if (ctx.tenant === null) {
      ctx.deps.metrics.rejections.inc({ cause: 'unauthorized' });
      throw new TRPCError({ code: 'UNAUTHORIZED', message: 'missing or unknown bearer token' });
    }
    return next({ ctx: { ...ctx, tenant: ctx.tenant, operator: ctx.operator === true } });
  });

  /** Calls for operators only (the fleet); a tenant's token gets FORBIDDEN. */
  const operatorProcedure = authed.use(({ ctx, next }) => {
    if (!ctx.operator) {
      throw new TRPCError({ code: 'FORBIDDEN', message: 'this call is for operators only: use a token from MGX_OPERATOR_TOKENS' });
    }
    return next({ ctx });
  });

  return { router: t.router, procedure, authed, operatorProcedure };
}

export type Trpc = ReturnType<typeof createTrpc>;

/** The context of an authenticated call. */
export type AuthedContext = ApiContext & { tenant: string; operator: boolean };
