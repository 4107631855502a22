import { accessSync, constants } from 'node:fs';
import { RuntimeError, RuntimeErrorCode } from './errors.js';

export type SocketAddress =
  { kind: 'unix'; path: string; source: string } | { kind: 'tcp'; host: string; port: number; protocol: 'http' | 'https'; source: string };

/** Where to look; the settings fill it (CONTAINER_HOST, DOCKER_HOST, XDG_RUNTIME_DIR). */
export interface DiscoveryInput {
  containerHost?: string | undefined;
  dockerHost?: string | undefined;
  xdgRuntimeDir?: string | undefined;
}

/** Parses CONTAINER_HOST / DOCKER_HOST forms: unix:///p, /p, tcp://h:p, http(s)://h:p. */
export function parseSocketUrl(url: string, source: string): SocketAddress {
  if (url.startsWith('unix://')) return { kind: 'unix', path: url.slice('unix://'.length), source };
  if (url.startsWith('/')) return { kind: 'unix', path: url, source };
  const m = /^(?<scheme>tcp|http|https):\/\/(?<host>[^:/]+):(?<port>\d+)\/?$/.exec(url)?.groups;
  if (m?.host && m.port)
    return { kind: 'tcp', host: m.host, port: Number(m.port), protocol: m.scheme === 'https' ? 'https' : 'http', source };
  throw new RuntimeError(RuntimeErrorCode.NO_SOCKET, `${source}=${url} is not unix:///path or tcp://host:port`, 'discover');
}

const usable = (path: string): boolean => {
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
};

/**
 * Finds the engine socket, in order: CONTAINER_HOST, DOCKER_HOST, rootful Podman,
 * rootless Podman ($XDG_RUNTIME_DIR), Docker. An explicit setting is used as given.
 */
export function discoverSocket(input: DiscoveryInput, exists: (path: string) => boolean = usable): SocketAddress {
  if (input.containerHost) return parseSocketUrl(input.containerHost, 'CONTAINER_HOST');
  if (input.dockerHost) return parseSocketUrl(input.dockerHost, 'DOCKER_HOST');
  const candidates: Array<[string, string]> = [['/run/podman/podman.sock', 'rootful podman']];
  if (input.xdgRuntimeDir) candidates.push([`${input.xdgRuntimeDir}/podman/podman.sock`, 'rootless podman']);
  candidates.push(['/var/run/docker.sock', 'docker']);
  for (const [path, source] of candidates) {
    if (exists(path)) return { kind: 'unix', path, source };
  }
  throw new RuntimeError(
    RuntimeErrorCode.NO_SOCKET,
    `no container engine socket found (tried ${candidates.map(([p]) => p).join(', ')}); ` +
      'run `npm run setup` as root to start Podman, or set CONTAINER_HOST=unix:///path/to/podman.sock',
    'discover',
  );
}

export function describeSocket(addr: SocketAddress): string {
  return addr.kind === 'unix' ? `unix://${addr.path}` : `${addr.protocol}://${addr.host}:${addr.port}`;
}
