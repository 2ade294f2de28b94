// A steady stream of HTTP requests to a test host while something happens,
// counting every answer that is not 200. Bounded in time and count; stops itself.

import http from 'node:http';
import https from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';

export interface LoadReport {
  requests: number;
  failed: number;
  /** status (or error code) -> count, for the failures */
  failures: Record<string, number>;
  seconds: number;
  /** Bodies seen, in order of first appearance (to see which release served). */
  bodies: string[];
  /** When the first 20 failures happened (wall clock, HH:MM:SS.mmm), to compare with the hosts' logs. */
  failureTimes: string[];
}

export interface Load {
  stop(): Promise<LoadReport>;
}

function once(
  url: URL,
  agent: http.Agent,
  headers: Record<string, string>,
): Promise<{ status: string; body: string }> {
  return new Promise((resolve) => {
    const get = url.protocol === 'https:' ? https.get : http.get;
    const req = get(url, { agent, headers, timeout: 10000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: String(res.statusCode), body }));
      res.on('error', (e: NodeJS.ErrnoException) => resolve({ status: e.code ?? 'error', body: '' }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: e.code ?? 'error', body: '' }));
  });
}

/** Starts `workers` loops of GET url, each pausing pauseMs between requests. */
export function startLoad(
  target: string,
  opts: {
    workers?: number;
    pauseMs?: number;
    maxSeconds?: number;
    maxRequests?: number;
    /** e.g. a Host header for an app with its own server_name */
    headers?: Record<string, string>;
    /** For https: the name the certificate is for (the test CA is not trusted here, the name is what matters). */
    servername?: string;
  } = {},
): Load {
  const url = new URL(target);
  const agent =
    url.protocol === 'https:'
      ? new https.Agent({
          keepAlive: true,
          maxSockets: opts.workers ?? 4,
          servername: opts.servername,
          rejectUnauthorized: false,
        })
      : new http.Agent({ keepAlive: true, maxSockets: opts.workers ?? 4 });
  const report: LoadReport = {
    requests: 0,
    failed: 0,
    failures: {},
    seconds: 0,
    bodies: [],
    failureTimes: [],
  };
  const started = Date.now();
  const deadline = started + (opts.maxSeconds ?? 300) * 1000;
  const maxRequests = opts.maxRequests ?? 200000;
  let running = true;
  const worker = async () => {
    while (running && Date.now() < deadline && report.requests < maxRequests) {
      const r = await once(url, agent, opts.headers ?? {});
      report.requests++;
      if (r.status !== '200') {
        report.failed++;
        report.failures[r.status] = (report.failures[r.status] ?? 0) + 1;
        if (report.failureTimes.length < 20) report.failureTimes.push(new Date().toISOString().slice(11, 23));
      } else if (!report.bodies.includes(r.body)) report.bodies.push(r.body);
      await sleep(opts.pauseMs ?? 5);
    }
  };
  const all = Promise.all(Array.from({ length: opts.workers ?? 4 }, worker));
  return {
    async stop() {
      running = false;
      await all;
      agent.destroy();
      report.seconds = (Date.now() - started) / 1000;
      return report;
    },
  };
}
