import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export const TWILIO_SID = `AC${'0123456789abcdef'.repeat(2)}`;
export const TWILIO_TOKEN = 'twilio-auth-token-for-tests';

/**
 * One loopback HTTP server that speaks the Twilio Messages API (checking the account path,
 * Basic auth and the To/From/Body form fields) and plays a generic SMS gateway whose answer the
 * test chooses.
 */
export interface SmsFakes {
  url: string;
  twilio: RecordedRequest[];
  gateway: RecordedRequest[];
  /** What the gateway answers next (default: 200 "OK: queued"). */
  gatewayAnswer: { status: number; body: string; delayMs?: number };
  /** When set, Twilio answers with this error. */
  twilioError: { status: number; code: number; message: string } | null;
  close(): Promise<void>;
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startSmsFakes(): Promise<SmsFakes> {
  const fakes: SmsFakes = {
    url: '',
    twilio: [],
    gateway: [],
    gatewayAnswer: { status: 200, body: 'OK: queued' },
    twilioError: null,
    close: async () => undefined,
  };
  const server = http.createServer(async (req, res) => {
    const body = await readBody(req);
    const record: RecordedRequest = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body };
    const json = (status: number, payload: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(payload));
    };
    const twilioPath = /^\/2010-04-01\/Accounts\/(AC[0-9a-f]{32})\/Messages\.json$/.exec(req.url ?? '');
    if (twilioPath) {
      fakes.twilio.push(record);
      const expectedAuth = `Basic ${Buffer.from(`${TWILIO_SID}:${TWILIO_TOKEN}`).toString('base64')}`;
      if (twilioPath[1] !== TWILIO_SID || req.headers.authorization !== expectedAuth) {
        return json(401, { code: 20003, message: 'Authenticate', status: 401 });
      }
      const form = new URLSearchParams(body);
      if (req.method !== 'POST' || !form.get('To') || !form.get('Body') || !(form.get('From') || form.get('MessagingServiceSid'))) {
        return json(400, { code: 21604, message: 'A required parameter is missing', status: 400 });
      }
      if (fakes.twilioError) return json(fakes.twilioError.status, { ...fakes.twilioError });
      return json(201, { sid: `SM${'a'.repeat(32)}`, status: 'queued', to: form.get('To'), body: form.get('Body') });
    }
    if ((req.url ?? '').startsWith('/gateway')) {
      fakes.gateway.push(record);
      const answer = fakes.gatewayAnswer;
      if (answer.delayMs) await new Promise((r) => setTimeout(r, answer.delayMs));
      if (res.destroyed) return;
      res.writeHead(answer.status, { 'content-type': 'text/plain' });
      res.end(answer.body);
      return;
    }
    res.writeHead(404).end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  fakes.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fakes.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return fakes;
}

/** A loopback forward proxy (CONNECT tunnels and absolute-URI requests) that records whom it connected to. */
export async function startProxy(): Promise<{ url: string; connections: string[]; close(): Promise<void> }> {
  const connections: string[] = [];
  const server = http.createServer((req, res) => {
    connections.push(req.url ?? '');
    const target = new URL(req.url ?? '');
    const upstream = http.request({ host: target.hostname, port: target.port, path: target.pathname + target.search, method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    req.pipe(upstream);
  });
  server.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    connections.push(req.url ?? '');
    const [host, port] = (req.url ?? '').split(':');
    const upstream = net.connect(Number(port), host, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
