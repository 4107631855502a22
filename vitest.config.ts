import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'runner/test/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // two cores: end-to-end files share one container engine
    maxWorkers: 2,
    reporters: ['default'],
    // servers under test log to files; a failing test prints what they logged during it
    setupFiles: ['test/support/setup.ts'],
    // the server bundle that tests running the server as its own process start (test/support/server-process.ts)
    globalSetup: ['test/support/global-setup.ts'],
  },
});
