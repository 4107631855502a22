import { buildServer } from './server-process.js';

/** Once per test run, before any test file: the server bundle that server processes run, from the current sources. */
export default function setup(): void {
  buildServer();
}
