import Docker from 'dockerode';
import { followSession, type MgxClient, type SessionEvent } from '@mgx/client';
import { discoverSocket, DockerRuntime, LABELS } from '@mgx/runtime';

// Shared by test/faults and test/security: bounded waits only, so a stuck session fails a
// test instead of hanging the run.

const address = discoverSocket({ containerHost: process.env.CONTAINER_HOST });
/** The engine the servers under test use, seen from the test process. */
export const runtime = new DockerRuntime({ address });
/** Raw engine access, to inspect containers the way an operator would. */
export const docker =
  address.kind === 'unix' ? new Docker({ socketPath: address.path }) : new Docker({ host: address.host, port: address.port });

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A session's events through the real subscription until FINISH, or what arrived when `ms` ran out. */
export async function follow(client: MgxClient, sessionId: string, ms: number): Promise<SessionEvent[]> {
  const events: SessionEvent[] = [];
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), ms);
  try {
    for await (const ev of followSession(client, sessionId, { signal: ac.signal })) events.push(ev);
  } finally {
    clearTimeout(timer);
  }
  return events;
}

/** Every stored event of a session, paged through sessions.events. */
export async function storedEvents(client: MgxClient, sessionId: string): Promise<SessionEvent[]> {
  const all: SessionEvent[] = [];
  for (let after = 0; ;) {
    const page = await client.sessions.events.query({ sessionId, afterSeq: after, limit: 1000 });
    all.push(...page.events);
    if (page.events.length < 1000) return all;
    after = page.lastSeq;
  }
}

/** Containers carrying this owner label (whatever their state). */
export const ownedContainers = (owner: string) => runtime.list({ [LABELS.owner]: owner });

/** The running container of a session, once the engine lists it, within `ms`. */
export async function containerOf(sessionId: string, ms = 20_000): Promise<Docker.ContainerInspectInfo> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const [c] = await docker.listContainers({ filters: { label: [`${LABELS.sessionId}=${sessionId}`], status: ['running'] } });
    if (c) return docker.getContainer(c.Id).inspect();
    await sleep(100);
  }
  throw new Error(`no running container for session ${sessionId} within ${ms} ms`);
}

/** The tRPC error code of a call, or 'OK'. */
export const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (err: Error & { data?: { code?: string } }) => err.data?.code ?? err.message,
  );

/** `p`, or a rejection after `ms`: for calls that must not hang. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}
