import { TRPCError } from '@trpc/server';
import { z } from 'zod';
import type { Trpc } from '../trpc.js';
import { tenantId } from '../ids.js';

/** Milliseconds since the epoch. */
const instant = z.number().int().min(0).max(8.64e15);

export function tenantsRouter({ router, authed }: Trpc) {
  return router({
    /**
     * What tenants' sessions used, summed from the store over the sessions that ended (were
     * decided) at `from` ≤ end < `to` (default now) and whose FINISH is stored: sessions, CPU
     * seconds, memory-GiB-seconds and wall seconds, in total and by terminal status. A tenant
     * sees its own; an operator every tenant's, or the one it names.
     */
    usage: authed
      .input(z.strictObject({ from: instant, to: instant.optional(), tenant: tenantId.optional() }))
      .query(async ({ ctx, input }) => {
        if (input.tenant !== undefined && !ctx.operator && input.tenant !== ctx.tenant) {
          throw new TRPCError({
            code: 'FORBIDDEN',
            message: "another tenant's usage is for operators only: use a token from MGX_OPERATOR_TOKENS",
          });
        }
        const to = input.to ?? Date.now();
        if (to < input.from) throw new TRPCError({ code: 'BAD_REQUEST', message: '`to` must not be before `from`' });
        const tenant = ctx.operator ? input.tenant : ctx.tenant;
        const tenants = await ctx.deps.store.sessions.usageByTenant({ from: input.from, to, ...(tenant !== undefined ? { tenant } : {}) });
        return { from: input.from, to, tenants };
      }),
  });
}
