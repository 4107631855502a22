import Docker from 'dockerode';
import { discoverSocket, DockerRuntime, LABELS } from '@mgx/runtime';
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
