// Builds one workspace project into dist/ with esbuild: its own sources bundled into
// one ESM file per entry, npm and @mgx/* dependencies left as imports.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

const cwd = process.cwd();
const pkg = JSON.parse(readFileSync(resolve(cwd, 'package.json'), 'utf8'));
const entries = process.argv.slice(2);
await build({
  entryPoints: entries.length > 0 ? entries : ['src/index.ts'],
  outdir: 'dist',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: true,
  packages: 'external',
  logLevel: 'warning',
  banner: { js: `// ${pkg.name} ${pkg.version}` },
});
