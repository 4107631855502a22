// Preloaded into a server under test (node --expose-gc --require memory-probe.cjs): on
// SIGUSR2 it collects garbage fully and writes what stays reachable to MGX_TEST_MEMORY_PROBE.
// Retained memory after a full GC tells buffering apart from allocation noise; RSS does not.
const { writeFileSync, renameSync } = require('node:fs');

const out = process.env.MGX_TEST_MEMORY_PROBE;
if (out && typeof global.gc === 'function') {
  process.on('SIGUSR2', () => {
    global.gc();
    global.gc();
    const m = process.memoryUsage();
    writeFileSync(
      `${out}.tmp`,
      JSON.stringify({ at: Date.now(), heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss }),
    );
    renameSync(`${out}.tmp`, out);
  });
}
