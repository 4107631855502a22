import { defineConfig } from 'vite';

// The console is a static build served by the server at `/`: hashed assets, no inline script
// (the page's Content-Security-Policy allows only its own files).
export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // no inline scripts or data: modules: the CSP allows script-src 'self' only
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
  },
});
