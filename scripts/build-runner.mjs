// Bundles the runner (and the frameworks it ships) into one file for the agent image. Every
// container parses and runs all of it before START, so what it pulls in is start latency:
// runner.meta.json beside it lists each input (runner/test/bundle.test.ts checks them).
//   node ../scripts/build-runner.mjs [--outdir DIR]   (from runner/; default dist)
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const { values } = parseArgs({ options: { outdir: { type: 'string', default: 'dist' } } });
const result = await build({
  entryPoints: ['src/main.ts'],
  outfile: join(values.outdir, 'runner.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
  metafile: true,
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
});
writeFileSync(join(values.outdir, 'runner.meta.json'), JSON.stringify(result.metafile));
