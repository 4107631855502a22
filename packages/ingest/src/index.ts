export { IngestHub, toStoredEvent } from './ingest-hub.js';
export type { IngestHubOptions, IngestSink, IngestedEvent } from './ingest-hub.js';
export { IngestClient } from './ingest-client.js';
export type { IngestClientOptions } from './ingest-client.js';
export { PROTOCOL_VERSION, CONTAINER_SOCKET_DIR, SOCKET_NAME } from './protocol.js';
export type { SessionTask, HelloMessage, AckMessage, EventMessage, ServerMessage } from './protocol.js';
export { IngestError, IngestErrorCode } from './errors.js';
