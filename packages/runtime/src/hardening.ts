import type { ContainerSpec } from './container-runtime.js';

/**
 * The create options every agent container gets: the locked-down defaults are not
 * optional and not overridable by a session. Engine-neutral (Docker API shape).
 */
export function hardenedCreateOptions(spec: ContainerSpec) {
  if (/^0(:|$)/.test(spec.user) || spec.user.startsWith('root')) {
    throw new Error(`refusing to run an agent container as root (user ${spec.user})`);
  }
  return {
    name: spec.name,
    Image: spec.image,
    Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
    Labels: spec.labels,
    User: spec.user,
    WorkingDir: spec.workingDir,
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    Tty: false,
    OpenStdin: false,
    StopSignal: 'SIGTERM',
    NetworkDisabled: spec.network === 'none',
    HostConfig: {
      Memory: spec.memoryBytes,
      // swap equal to memory: no swap beyond the limit
      MemorySwap: spec.memoryBytes,
      CpuQuota: spec.cpuQuota,
      CpuPeriod: spec.cpuPeriod,
      PidsLimit: spec.pidsLimit,
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      ReadonlyRootfs: true,
      Tmpfs: { '/tmp': `rw,nosuid,nodev,noexec,size=${spec.tmpfsBytes}` },
      NetworkMode: spec.network === 'none' ? 'none' : 'bridge',
      Binds: spec.mounts.map((m) => `${m.hostPath}:${m.containerPath}:${m.readOnly ? 'ro' : 'rw'}`),
      // explicit, so a create never depends on the engine's default ulimits (which can
      // exceed the host's hard limits and fail every create)
      Ulimits: [
        { Name: 'nofile', Soft: 1024, Hard: 1024 },
        { Name: 'nproc', Soft: 4096, Hard: 4096 },
      ],
      Privileged: false,
      AutoRemove: false,
      RestartPolicy: { Name: 'no' },
    },
  };
}
