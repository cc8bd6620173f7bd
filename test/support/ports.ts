import { createServer } from 'node:net';
import { once } from 'node:events';

/** A loopback port that nothing listens on (it was free a moment ago): for "server down" cases and for child processes. */
export async function unusedPort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}
