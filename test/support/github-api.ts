// A local stand-in for GitHub's REST API, as far as deployments go: the
// documented shapes of creating and listing deployments and their statuses, on
// 127.0.0.1, recording every call. GITHUB_API_URL points the action at it.

import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ApiCall {
  method: string;
  path: string;
  body: Record<string, unknown> | null;
  authorization: string;
}

interface Deployment {
  id: number;
  ref: string;
  environment: string;
  statuses: { id: number; state: string }[];
}

export interface FakeGitHub {
  url: string;
  calls: ApiCall[];
  deployments: Deployment[];
  /** Answer every call with this status (403: a token without deployments: write). */
  refuse: number | null;
  /** Answer a call otherwise: a status and a raw body (any shape, any type), after a delay. */
  odd:
    | ((call: ApiCall) => {
        status: number;
        body: string;
        delayMs?: number;
        headers?: Record<string, string>;
      } | null)
    | null;
  /** Calls as `METHOD path state`, for asserting a sequence. */
  sequence(): string[];
  close(): Promise<void>;
}

export async function fakeGitHub(): Promise<FakeGitHub> {
  const calls: ApiCall[] = [];
  const deployments: Deployment[] = [];
  let ids = 1000;
  const server = http.createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (text += c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const body = text ? (JSON.parse(text) as Record<string, unknown>) : null;
      calls.push({
        method: req.method ?? '',
        path: url.pathname,
        body,
        authorization: String(req.headers.authorization ?? ''),
      });
      const send = (status: number, data: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
        res.end(JSON.stringify(data));
      };
      const odd = fake.odd?.(calls[calls.length - 1]!);
      if (odd) {
        setTimeout(() => {
          res.writeHead(odd.status, { 'content-type': 'text/plain', ...odd.headers });
          res.end(odd.body);
        }, odd.delayMs ?? 0);
        return;
      }
      if (fake.refuse)
        return send(fake.refuse, {
          message: 'Resource not accessible by integration',
          documentation_url: 'https://docs.github.com/rest/deployments/deployments#create-a-deployment',
        });
      const m = /^\/repos\/[^/]+\/[^/]+\/deployments(?:\/(\d+)\/statuses)?$/.exec(url.pathname);
      if (!m) return send(404, { message: 'Not Found' });
      const deployment = m[1] ? deployments.find((d) => d.id === Number(m[1])) : undefined;
      if (m[1] && !deployment) return send(404, { message: 'Not Found' });
      if (req.method === 'POST' && !deployment) {
        if (typeof body?.ref !== 'string') return send(422, { message: 'Invalid request: ref' });
        const d = {
          id: ++ids,
          ref: body.ref,
          environment: String(body.environment ?? 'production'),
          statuses: [],
        };
        deployments.push(d);
        return send(201, { id: d.id, ref: d.ref, environment: d.environment, payload: body.payload });
      }
      if (req.method === 'POST' && deployment) {
        const status = { id: ++ids, state: String(body?.state) };
        deployment.statuses.push(status);
        return send(201, { ...status, environment: deployment.environment });
      }
      if (req.method === 'GET' && !deployment) {
        const env = url.searchParams.get('environment');
        const listed = deployments.filter((d) => !env || d.environment === env).reverse();
        return send(
          200,
          listed.slice(0, Number(url.searchParams.get('per_page') ?? 30)).map(({ statuses: _s, ...d }) => d),
        );
      }
      if (req.method === 'GET' && deployment)
        return send(
          200,
          [...deployment.statuses].reverse().slice(0, Number(url.searchParams.get('per_page') ?? 30)),
        );
      send(404, { message: 'Not Found' });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const fake: FakeGitHub = {
    url: `http://127.0.0.1:${port}`,
    calls,
    deployments,
    refuse: null,
    odd: null,
    sequence: () =>
      calls.map((c) =>
        [c.method, c.path.replace(/^\/repos\/[^/]+\/[^/]+/, ''), c.body?.state ?? ''].join(' ').trim(),
      ),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  return fake;
}

/**
 * A call sequence with the calls after the listing of earlier deployments put
 * in a fixed order: those reads and updates run side by side.
 */
export function listedInAnyOrder(sequence: string[]): string[] {
  const at = sequence.indexOf('GET /deployments');
  return at < 0 ? sequence : [...sequence.slice(0, at + 1), ...sequence.slice(at + 1).sort()];
}
