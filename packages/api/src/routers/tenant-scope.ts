import { TRPCError } from '@trpc/server';
import type { AuthedContext } from '../trpc.js';

/**
 * The tenant a listing is limited to: a tenant sees its own; an operator every tenant's
 * (undefined), or the one it names. The `tenant` filter is FORBIDDEN to tenants.
 */
export function scopedTenant(ctx: AuthedContext, asked: string | undefined): string | undefined {
  if (asked !== undefined && !ctx.operator) {
    throw new TRPCError({ code: 'FORBIDDEN', message: 'the tenant filter is for operators only: use a token from MGX_OPERATOR_TOKENS' });
  }
  return ctx.operator ? asked : ctx.tenant;
}
