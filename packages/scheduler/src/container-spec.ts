import type { PoolSpec, Settings } from '@mgx/config';
import { CONTAINER_SOCKET_DIR, SOCKET_NAME } from '@mgx/ingest';
import type { ContainerSpec } from '@mgx/runtime';

/**
 * The one description of an agent container, for a session's own container and for a warm
 * pool's: the same image, user, mounts and limits, so a pooled container is exactly what a
 * session would have been given. Env says only where the socket and the workspace are.
 */
export function agentContainerSpec(
  settings: Settings,
  o: { name: string; labels: Record<string, string>; workspace: string; socketDir: string; limits: PoolSpec; pooled?: boolean },
): ContainerSpec {
  return {
    name: o.name,
    image: settings.agent.image,
    env: {
      MGX_INGEST_SOCKET: `${CONTAINER_SOCKET_DIR}/${SOCKET_NAME}`,
      MGX_WORKSPACE: '/workspace',
      HOME: '/tmp',
      // a pooled runner waits for its session for as long as the pool keeps it
      ...(o.pooled ? { MGX_POOLED: '1' } : {}),
    },
    labels: o.labels,
    user: settings.agent.user,
    workingDir: '/workspace',
    mounts: [
      { hostPath: o.workspace, containerPath: '/workspace', readOnly: false },
      { hostPath: o.socketDir, containerPath: CONTAINER_SOCKET_DIR, readOnly: true },
    ],
    memoryBytes: o.limits.memoryBytes,
    cpuQuota: o.limits.cpuQuota,
    cpuPeriod: settings.agent.cpuPeriod,
    pidsLimit: settings.agent.pidsLimit,
    network: o.limits.network,
    tmpfsBytes: 64 * 1024 * 1024,
  };
}
