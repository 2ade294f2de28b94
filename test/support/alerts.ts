// The alert receiver of the provision e2e test: an HTTP server on the machine
// side of the test host's veth (where pebble listens too) that records every
// request the host sends: alerts (POST JSON), heartbeats and health pings. The
// test writes what it provoked and what arrived to one file per Debian release;
// npm run reliability lists it in docs/reliability.md.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { E2E_PREFIX } from './e2e.js';
import type { DebianRelease } from './hosts.js';

export const alertsFile = (release: DebianRelease) =>
  `/run/metalship-e2e/${E2E_PREFIX}alerts-${release}.json`;

export interface Received {
  method: string;
  path: string;
  body: string;
}

export interface Alert {
  host: string;
  app: string;
  kind: string;
  detail: string;
  time: string;
}

export interface AlertFigures {
  at: string;
  release: DebianRelease;
  /** Each condition provoked on the host, and the alert the receiver got for it (null: none). */
  fired: { kind: string; provoked: string; received: Alert | null }[];
  heartbeats: number;
  pings: number;
}

export interface Receiver {
  base: string;
  received: Received[];
  /** The status answered to requests whose path starts with the prefix (default 200). */
  status: Map<string, number>;
  alerts(from?: number): Alert[];
  stop(): Promise<void>;
}

export async function startReceiver(listen: string): Promise<Receiver> {
  const received: Received[] = [];
  const status = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '';
      received.push({ method: req.method ?? '', path, body: Buffer.concat(chunks).toString('utf8') });
      const code = [...status].find(([prefix]) => path.startsWith(prefix))?.[1] ?? 200;
      res.writeHead(code, { 'content-type': 'text/plain' }).end(code === 200 ? 'ok\n' : 'no\n');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, listen, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    base: `http://${listen}:${port}`,
    received,
    status,
    alerts: (from = 0) =>
      received
        .slice(from)
        .filter((r) => r.method === 'POST' && r.path.startsWith('/alert/'))
        .map((r) => JSON.parse(r.body) as Alert),
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** The alerts section of docs/reliability.md: each condition provoked and what was received. */
export function alertsTable(figures: AlertFigures | null): string[] {
  if (!figures) return ['❌ The provision test did not report its alerts for this run.'];
  const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  return [
    `On a Debian ${figures.release} host provisioned with \`alert-webhook\` pointing at a receiver on the test network, each condition was provoked for real; the receiver recorded the POSTs (${figures.heartbeats} heartbeats and ${figures.pings} health pings arrived too):`,
    '',
    '| kind | provoked by | received |',
    '|---|---|---|',
    ...figures.fired.map(
      (f) =>
        `| ${f.kind} | ${cell(f.provoked)} | ${f.received ? `✅ ${cell(f.received.detail.slice(0, 160))}` : '❌ nothing'} |`,
    ),
  ];
}
