import Docker from 'dockerode';
import { discoverSocket, DockerRuntime, LABELS, type ContainerSummary } from '@mgx/runtime';
import { sleep } from './sessions.js';

// The container engine the servers under test use, seen from the test process.

const address = discoverSocket({ containerHost: process.env.CONTAINER_HOST });
/** The engine through mgx's own runtime adapter. */
export const runtime = new DockerRuntime({ address });
/** Raw engine access, to inspect containers the way an operator would. */
export const docker =
  address.kind === 'unix' ? new Docker({ socketPath: address.path }) : new Docker({ host: address.host, port: address.port });

/** Containers carrying this owner label (whatever their state). */
export const ownedContainers = (owner: string) => runtime.list({ [LABELS.owner]: owner });

/**
 * The containers matching `labels` that are still there after up to `ms`: a finished
 * session's container is removed shortly after its FINISH, off the client's path (and by the
 * next start's reconcile if its server died first), so this waits for it, bounded.
 */
export async function containersLeft(labels: Record<string, string>, ms = 10_000): Promise<ContainerSummary[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = await runtime.list(labels);
    if (left.length === 0 || Date.now() >= deadline) return left;
    await sleep(100);
  }
}

/** Whether the container is gone within `ms` (see containersLeft). */
export async function goneWithin(id: string, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if ((await runtime.inspect(id)) === null) return true;
    if (Date.now() >= deadline) return false;
    await sleep(100);
  }
}

/** The containers of this owner still there after up to `ms` (see containersLeft). */
export const ownedLeft = (owner: string, ms?: number) => containersLeft({ [LABELS.owner]: owner }, ms);

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
