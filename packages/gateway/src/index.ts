export { ModelGateway } from './model-gateway.js';
export type { ModelGatewayOptions, GatewaySession, PlatformEvent } from './model-gateway.js';
export { EgressProxy } from './egress-proxy.js';
export type { EgressProxyOptions, EgressSession } from './egress-proxy.js';
