export { ModelGateway } from './model-gateway.js';
export type { ModelGatewayOptions, GatewaySession, PlatformEvent } from './model-gateway.js';
