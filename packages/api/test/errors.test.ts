import { TRPCError } from '@trpc/server';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '@mgx/config';
import { StoreError, StoreErrorCode, type Store } from '@mgx/event-store';
import type { Metrics } from '@mgx/metrics';
import { RuntimeError, RuntimeErrorCode } from '@mgx/runtime';
import { createAppRouter, toTRPCError, trpcCodeOf, type ApiContext, type ApiDeps } from '../src/index.js';

describe('trpcCodeOf', () => {
  it.each([
    [StoreErrorCode.SESSION_NOT_FOUND, 'NOT_FOUND'],
    [StoreErrorCode.SESSION_EXISTS, 'CONFLICT'],
    [StoreErrorCode.NOT_DECIDED, 'INTERNAL_SERVER_ERROR'],
    [StoreErrorCode.UNAVAILABLE, 'SERVICE_UNAVAILABLE'],
    [StoreErrorCode.INVALID_CURSOR, 'BAD_REQUEST'],
    [StoreErrorCode.WORKER_NOT_FOUND, 'NOT_FOUND'],
    [StoreErrorCode.WORKER_NOT_LIVE, 'BAD_REQUEST'],
  ])('maps the store code %s to %s', (code, expected) => {
    expect(trpcCodeOf(new StoreError(code, 'x'))).toBe(expected);
  });

  it.each([
    [RuntimeErrorCode.ENGINE_UNAVAILABLE, 'SERVICE_UNAVAILABLE'],
    [RuntimeErrorCode.NO_SOCKET, 'SERVICE_UNAVAILABLE'],
    [RuntimeErrorCode.IMAGE_NOT_FOUND, 'SERVICE_UNAVAILABLE'],
    [RuntimeErrorCode.ENGINE_TIMEOUT, 'GATEWAY_TIMEOUT'],
    [RuntimeErrorCode.ENGINE_REJECTED, 'BAD_GATEWAY'],
    [RuntimeErrorCode.CONTAINER_NOT_FOUND, 'NOT_FOUND'],
    [RuntimeErrorCode.NAME_CONFLICT, 'CONFLICT'],
  ])('maps the runtime code %s to %s', (code, expected) => {
    expect(trpcCodeOf(new RuntimeError(code, 'x', 'op'))).toBe(expected);
  });

  it('leaves anything else alone', () => {
    expect(trpcCodeOf(new Error('x'))).toBeUndefined();
    expect(trpcCodeOf({ code: StoreErrorCode.INVALID_CURSOR })).toBeUndefined();
    expect(toTRPCError('x')).toBeUndefined();
  });

  it('keeps the message and the error as its cause', () => {
    const err = new StoreError(StoreErrorCode.UNAVAILABLE, 'the store is away');
    const mapped = toTRPCError(err);
    expect(mapped).toBeInstanceOf(TRPCError);
    expect(mapped?.message).toBe('the store is away');
    expect(mapped?.cause).toBe(err);
  });
});

describe('the router', () => {
  const counter = () => ({ inc: () => undefined, dec: () => undefined });
  const call = (store: Partial<Store['sessions']>, frameworks: () => ApiDeps['frameworks'] = () => []) => {
    const deps = {
      store: { sessions: store, describe: () => 'fake' },
      metrics: { rejections: counter(), sseSubscribers: counter() } as unknown as Metrics,
      logger: silentLogger,
      get frameworks() {
        return frameworks();
      },
    } as unknown as ApiDeps;
    const ctx: ApiContext = { deps, tenant: 't' };
    return createAppRouter({ ssePingMs: 1000 }).createCaller(ctx);
  };
  const codeOf = async (p: Promise<unknown>) => {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TRPCError);
    return (err as TRPCError).code;
  };

  it('answers a bad cursor with BAD_REQUEST and its message', async () => {
    const api = call({
      listSessions: async () => {
        throw new StoreError(StoreErrorCode.INVALID_CURSOR, 'cursor "x" is not one this server gave out');
      },
    });
    await expect(api.sessions.list({ cursor: 'x' })).rejects.toThrow('cursor "x" is not one this server gave out');
    expect(await codeOf(api.sessions.list({ cursor: 'x' }))).toBe('BAD_REQUEST');
  });

  it('answers an unavailable store with SERVICE_UNAVAILABLE', async () => {
    const api = call({
      getSession: async () => {
        throw new StoreError(StoreErrorCode.UNAVAILABLE, 'down');
      },
    });
    expect(await codeOf(api.sessions.get({ sessionId: 's1' }))).toBe('SERVICE_UNAVAILABLE');
  });

  it('answers an engine failure with its code', async () => {
    const api = call({}, () => {
      throw new RuntimeError(RuntimeErrorCode.ENGINE_TIMEOUT, 'slow', 'info');
    });
    expect(await codeOf(api.frameworks.list())).toBe('GATEWAY_TIMEOUT');
  });

  it('keeps other errors internal, and its own codes as they are', async () => {
    const api = call({
      getSession: async () => {
        throw new Error('boom');
      },
    });
    expect(await codeOf(api.sessions.get({ sessionId: 's1' }))).toBe('INTERNAL_SERVER_ERROR');
    expect(await codeOf(call({ getSession: async () => null }).sessions.get({ sessionId: 's1' }))).toBe('NOT_FOUND');
  });
});
