// Bundles the server (apps/server/src/main.ts and the workspace packages it uses) into
// apps/server/dist/server.mjs, run with plain node: no TypeScript loader in the process, which
// costs about 25 MB of memory and a thread. Dependencies from node_modules stay imports; code
// loaded only on demand (the MongoDB adapter) stays in chunks of its own, so the driver is
// loaded only when MongoDB is the store. The source map is written beside it
// (NODE_OPTIONS=--enable-source-maps maps stack traces back, at about 7 MB).
//   node scripts/build-server.mjs   (from the repository root, or `nx build server`)
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'apps/server/dist');
rmSync(outdir, { recursive: true, force: true });
await build({
  absWorkingDir: root,
  entryPoints: { server: 'apps/server/src/main.ts' },
  outdir,
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  keepNames: true,
  sourcemap: 'linked',
  logLevel: 'warning',
  plugins: [
    {
      // workspace packages are bundled (their exports are TypeScript); anything else is resolved from node_modules at run time
      name: 'dependencies-external',
      setup(b) {
        b.onResolve({ filter: /^[^./]/ }, (args) => (args.path.startsWith('@mgx/') ? undefined : { path: args.path, external: true }));
      },
    },
  ],
});
