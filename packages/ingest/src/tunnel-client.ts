import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { SERVICE_SOCKETS, type DialMessage } from './protocol.js';

/** Pipes two streams both ways; either side closing closes the other. */
export function splice(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const end = () => {
    a.destroy();
    b.destroy();
  };
  a.once('close', end);
  b.once('close', end);
  a.on('error', end);
  b.on('error', end);
}

/**
 * The runner's answer to a dial: a stream from the host to 127.0.0.1:`port` inside the
 * container, carried on a new connection to the session's tunnel.sock in `socketDir`.
 */
export function answerDial(socketDir: string, msg: DialMessage): void {
  const back = () => connect(join(socketDir, SERVICE_SOCKETS.tunnel));
  const target = connect({ host: '127.0.0.1', port: msg.port });
  target.once('connect', () => {
    target.off('error', refused);
    const tunnel = back();
    tunnel.write(`${msg.id}\n`);
    splice(tunnel, target);
  });
  const refused = (err: NodeJS.ErrnoException) => {
    const tunnel = back();
    tunnel.on('error', () => tunnel.destroy());
    tunnel.end(`${msg.id} !${err.code ?? 'ERROR'}\n`);
  };
  target.once('error', refused);
}

/** A loopback TCP port inside the container whose every connection is piped to `socketPath`. */
export interface LoopbackForward {
  port: number;
  close(): void;
}

/**
 * Exposes a unix socket of the session's directory on 127.0.0.1 (an ephemeral port), for
 * programs that speak TCP only (agent CLIs: an OpenAI base URL, HTTP_PROXY).
 */
export function forwardLoopback(socketPath: string): Promise<LoopbackForward> {
  const server = createServer((client) => splice(client, connect(socketPath)));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      // never keeps the runner alive by itself
      server.unref();
      resolve({ port, close: () => server.close() });
    });
  });
}
