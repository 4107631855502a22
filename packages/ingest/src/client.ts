// The runner's entry: the client and the protocol, without the host side (and its deps).
export { IngestClient } from './ingest-client.js';
export type { IngestClientOptions } from './ingest-client.js';
export { PROTOCOL_VERSION, CONTAINER_SOCKET_DIR, SOCKET_NAME, SERVICE_SOCKETS } from './protocol.js';
export type { SessionTask, HelloMessage, AckMessage, EventMessage, ServerMessage, DialMessage, ServiceName } from './protocol.js';
export { answerDial, forwardLoopback, splice } from './tunnel-client.js';
export type { LoopbackForward } from './tunnel-client.js';
export { IngestError, IngestErrorCode } from './errors.js';
