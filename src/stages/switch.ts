// The switch, verify and rollback stages over a set of hosts.

import type { Log } from '../log.js';
import type { Slot } from '../remote/layout.js';
import { markScript } from '../remote/release.js';
import { switchScript } from '../remote/switch.js';
import { unitFiles } from '../remote/units.js';
import {
  cleanupScript,
  listScript,
  parseListing,
  pickRollbackTarget,
  planCleanup,
  verifyScript,
  type ReleaseListing,
} from '../remote/verify.js';
import { onEachHost, type Host, type HostResult } from './hosts.js';

export interface ServiceSettings {
  'app-user': string;
  'app-module': string;
  'uvicorn-args': string[];
  'worker-command': string[];
  'scheduler-command': string[];
  'health-path': string;
  'ready-timeout': number;
  'server-name': string;
}

export interface VerifySettings {
  'health-path': string;
  'verify-path': string;
  url: string;
  'expect-status': number;
  'expect-body': string;
  'verify-timeout': number;
  'verify-interval': number;
  'worker-command': string[];
  'scheduler-command': string[];
}

export interface SwitchResult extends HostResult {
  previous?: string;
  slot?: Slot;
  seconds?: number;
}

export async function switchHost(
  host: Host,
  releaseId: string,
  s: ServiceSettings,
  log: Log,
): Promise<SwitchResult> {
  const started = Date.now();
  const units = unitFiles(
    {
      layout: host.layout,
      user: s['app-user'],
      appModule: s['app-module'],
      uvicornArgs: s['uvicorn-args'],
      workerCommand: s['worker-command'],
      schedulerCommand: s['scheduler-command'],
    },
    { worker: host.roles.worker, scheduler: host.roles.scheduler },
  );
  const res = await host.conn.run(
    switchScript({
      layout: host.layout,
      releaseId,
      units,
      healthPath: s['health-path'],
      readyTimeout: s['ready-timeout'],
      serverName: s['server-name'],
      worker: host.roles.worker && s['worker-command'].length > 0,
      scheduler: host.roles.scheduler && s['scheduler-command'].length > 0,
      api: host.roles.api,
    }),
    { stream: true, what: `switching to ${releaseId}` },
  );
  const previous = /^PREVIOUS (.*)$/m.exec(res.stdout)?.[1]?.trim() ?? '';
  const slot = /^SLOT (blue|green)$/m.exec(res.stdout)?.[1] as Slot | undefined;
  log.info(
    slot
      ? `[${host.spec.label}] ${releaseId} serves from the ${slot} slot (was ${previous || 'nothing'})`
      : `[${host.spec.label}] ${releaseId} is current, no api on this host (was ${previous || 'nothing'})`,
  );
  return { host: host.spec.label, ok: true, previous, slot, seconds: (Date.now() - started) / 1000 };
}

/** Switches the hosts that did switch back to the release each had before. */
export async function revertHosts(
  hosts: Host[],
  switched: { host: string; previous?: string }[],
  s: ServiceSettings,
  log: Log,
): Promise<string[]> {
  const reverted: string[] = [];
  for (const r of switched) {
    if (!r.previous) continue;
    const host = hosts.find((h) => h.spec.label === r.host)!;
    try {
      await log.group(`Revert ${host.spec.label} to ${r.previous}`, () =>
        switchHost(host, r.previous!, s, log),
      );
      reverted.push(r.host);
    } catch (err) {
      log.error(
        `could not revert ${r.host} to ${r.previous}: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  }
  return reverted;
}

export interface VerifyResult extends HostResult {
  healthy?: boolean;
  attempts?: number;
  seconds?: number;
  status?: number;
  body?: string;
}

async function verifyUrl(
  s: VerifySettings,
): Promise<{ ok: boolean; attempts: number; seconds: number; status: number; body: string }> {
  const started = Date.now();
  const deadline = started + s['verify-timeout'] * 1000;
  let attempts = 0;
  for (;;) {
    attempts++;
    let status = 0;
    let body = '';
    try {
      const res = await fetch(s.url, { redirect: 'manual', signal: AbortSignal.timeout(5000) });
      status = res.status;
      body = (await res.text()).slice(0, 4096);
    } catch (err) {
      body = err instanceof Error ? err.message : String(err);
    }
    const ok = status === s['expect-status'] && body.includes(s['expect-body']);
    if (ok || Date.now() >= deadline)
      return { ok, attempts, seconds: (Date.now() - started) / 1000, status, body: body.slice(0, 500) };
    await new Promise((r) => setTimeout(r, s['verify-interval'] * 1000));
  }
}

/** Health checks on one host until healthy or timed out; throws naming the host and why. */
export async function verifyHost(
  host: Host,
  s: VerifySettings,
  log: Log,
): Promise<{ healthy: true; attempts: number; seconds: number }> {
  const units = [
    host.roles.worker && s['worker-command'].length ? host.layout.units.worker : null,
    host.roles.scheduler && s['scheduler-command'].length ? host.layout.units.scheduler : null,
  ].filter((u): u is string => !!u);
  const res = await host.conn.exec(
    verifyScript({
      layout: host.layout,
      path: s['verify-path'] || s['health-path'],
      timeout: s['verify-timeout'],
      interval: s['verify-interval'],
      expectStatus: s['expect-status'],
      expectBody: s.url ? '' : s['expect-body'],
      units,
      api: host.roles.api,
    }),
    { what: 'health check', timeoutMs: (s['verify-timeout'] + 60) * 1000 },
  );
  const line = /^RESULT (.*)$/m.exec(res.stdout)?.[1] ?? '';
  const parsed = line
    ? (JSON.parse(line) as { ok: boolean; attempts: number; seconds: number; status: number; body: string })
    : null;
  const down = /^UNITS_DOWN (.*)$/m.exec(res.stdout)?.[1];
  if (res.code !== 0) {
    const why = [
      parsed && !parsed.ok
        ? `${s['verify-path'] || s['health-path']} answered ${parsed.status || 'nothing'} after ${parsed.attempts} attempts: ${parsed.body.slice(0, 300)}`
        : '',
      down ? `units not active: ${down}` : '',
      res.stderr.trim() ? `recent journal:\n${res.stderr.trim().split('\n').slice(-20).join('\n')}` : '',
    ]
      .filter(Boolean)
      .join('\n');
    throw new Error(`${host.spec.label} is unhealthy: ${why}`);
  }
  log.info(
    host.roles.api
      ? `[${host.spec.label}] healthy after ${parsed?.attempts} check(s), ${parsed?.seconds} s`
      : `[${host.spec.label}] units active (no api on this host)`,
  );
  return { healthy: true, attempts: parsed?.attempts ?? 0, seconds: parsed?.seconds ?? 0 };
}

/** The url input checked from the runner (through whatever serves it: a load balancer, a CDN). */
export async function verifyUrlStage(s: VerifySettings, log: Log): Promise<VerifyResult> {
  const r = await verifyUrl(s);
  log.info(`${s.url}: ${r.status} after ${r.attempts} attempt(s)`);
  if (!r.ok) {
    return {
      host: s.url,
      ok: false,
      healthy: false,
      attempts: r.attempts,
      seconds: r.seconds,
      error: `${s.url} answered ${r.status || 'nothing'} (expected ${s['expect-status']}${s['expect-body'] ? ` containing '${s['expect-body']}'` : ''}): ${r.body.slice(0, 300)}`,
    };
  }
  return { host: s.url, ok: true, healthy: true, attempts: r.attempts, seconds: r.seconds };
}

/** Health checks on every host (and of the URL from the runner), until healthy or timed out. */
export async function verifyStage(hosts: Host[], s: VerifySettings, log: Log): Promise<VerifyResult[]> {
  return log.group('Verify', async () => {
    const results: VerifyResult[] = await onEachHost(hosts, (host) => verifyHost(host, s, log));
    if (s.url) results.push(await verifyUrlStage(s, log));
    return results;
  });
}

export async function listReleases(host: Host): Promise<ReleaseListing> {
  return parseListing((await host.conn.run(listScript(host.layout), { what: 'listing releases' })).stdout);
}

/** Removes old releases and unused virtualenvs, keeping `keep` good ones plus current and the standby. */
export async function cleanupStage(hosts: Host[], keep: number, log: Log): Promise<void> {
  await onEachHost(hosts, async (host) => {
    const plan = planCleanup(await listReleases(host), keep);
    const res = await host.conn.run(cleanupScript(host.layout, plan), { what: 'cleanup' });
    if (plan.releases.length || plan.venvs.length)
      log.info(`[${host.spec.label}] ${res.stdout.trim().split('\n').join('; ')}`);
    return {};
  }).then((rs) =>
    rs.filter((r) => !r.ok).forEach((r) => log.warn(`cleanup on ${r.host} failed: ${r.error}`)),
  );
}

/** The rollback target, the same on every host: it must be a good release everywhere. */
export function rollbackTarget(
  hosts: Host[],
  listings: ReleaseListing[],
  requested: string,
): { target: string; from: string } {
  const first = listings[0]!;
  const pick = pickRollbackTarget(first, requested);
  if ('error' in pick) throw new Error(`cannot roll back on ${hosts[0]!.spec.label}: ${pick.error}`);
  listings.forEach((listing, i) => {
    const r = listing.releases.find((x) => x.id === pick.target);
    if (!r || r.status !== 'ready') {
      throw new Error(
        `cannot roll back to ${pick.target}: it is ${r ? r.status : 'missing'} on ${hosts[i]!.spec.label}`,
      );
    }
  });
  return { target: pick.target, from: first.links.current ?? '' };
}

export async function markBad(hosts: Host[], releaseId: string, reason: string, log: Log): Promise<void> {
  await Promise.all(
    hosts.map((h) =>
      h.conn
        .run(markScript(h.layout, releaseId, 'bad', reason))
        .catch((e) => log.warn(`could not mark ${releaseId} bad on ${h.spec.label}: ${e}`)),
    ),
  );
}
