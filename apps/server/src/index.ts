export { startServer, StartupError, VERSION } from './server.js';
export type { RunningServer, StartOptions } from './server.js';
