// provision: converge each host to the standard, item by item, and report
// ok / changed / warning / failed per item (check: true only reports).

import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { isAppHost, topology } from '../inputs/hosts.js';
import { layout } from '../remote/layout.js';
import type { HostFacts, ProvisionSettings } from '../remote/provision/index.js';
import { inUseStep, type InUse } from '../remote/provision/in-use.js';
import { postgresqlTlsStep } from '../remote/provision/postgresql.js';
import { redisTlsStep } from '../remote/provision/redis.js';
import type { ServiceTls } from '../remote/provision/service-tls.js';
import type { BalancerMember } from '../remote/balancer.js';
import { onEachHost, resolveRoles, withHosts, type Host } from '../stages/hosts.js';
import { balancerMembers } from '../stages/rollout.js';
import { offsiteLinks, takesBackups } from '../stages/offsite.js';
import {
  freshConnectionTest,
  precheckHost,
  provisionHost,
  readHostFacts,
  type ProvisionHostResult,
} from '../stages/provision.js';
import { runAction, type ActionOutcome } from './run.js';

/** The certificates of the redis and db hosts as the runner read them, for their app hosts. */
export interface ServiceCertificates {
  redis?: ServiceTls | null;
  postgresql?: ServiceTls | null;
}

export function provisionSettings(
  settings: Settings<'provision'>,
  roles: { worker: boolean; scheduler: boolean; db?: boolean; redis?: boolean; backup?: boolean },
  balancer: BalancerMember[] | null = null,
  offsite?: ProvisionSettings['offsite'],
  elsewhere: ProvisionSettings['elsewhere'] = null,
  serviceTls: ServiceCertificates = {},
): ProvisionSettings {
  const where = topology(settings.hosts);
  const pusher = takesBackups(
    { db: false, redis: false, backup: false, ...roles, lb: balancer !== null },
    !!where.db,
    settings.postgresql,
  );
  return {
    balancer,
    serves: { db: roles.db ?? false, redis: roles.redis ?? false, backup: roles.backup ?? false },
    offsite: offsite ?? { pusher },
    elsewhere: roles.db || roles.redis ? elsewhere : null,
    topology: where,
    layout: layout(settings.app, settings['app-root']),
    check: settings.check,
    user: settings['app-user'],
    roles: { worker: roles.worker, scheduler: roles.scheduler },
    appModule: settings['app-module'],
    uvicornArgs: settings['uvicorn-args'],
    workerCommand: settings['worker-command'],
    unitsReady: settings['units-ready'],
    schedulerCommand: settings['scheduler-command'],
    healthPath: settings['health-path'],
    system: { enabled: settings.system, securityUpdates: settings['security-updates'] },
    firewall: { enabled: settings.firewall, allow: settings['firewall-allow'] },
    ssh: { enabled: settings['ssh-hardening'], rootLogin: settings['ssh-root-login'] },
    deployUser: settings['deploy-user'] ? { name: settings['deploy-user'], keys: settings['deploy-user-keys'] } : null,
    python: { install: settings['python-install'], version: settings['python-version'] },
    env: settings.env.text,
    nginx: { enabled: settings.nginx, staticDir: settings['static-dir'], serverName: settings['server-name'] },
    tls: { domains: settings.domains, email: settings['acme-email'], server: settings['acme-server'], caBundle: settings['acme-ca-bundle'] },
    postgresql: {
      enabled: settings.postgresql,
      database: settings['db-name'],
      user: settings['db-user'],
      loginUser: settings['db-login-user'] || settings['db-user'],
      previousUser: settings['db-previous-user'],
      password: settings['db-password'],
      remoteCidrs: settings['db-remote-cidrs'],
      backupDir: settings['backup-dir'],
      keepDays: settings['backup-keep-days'],
      schedule: settings['backup-schedule'],
      tls: where.db ? (serviceTls.postgresql ?? null) : null,
    },
    redis: {
      enabled: settings.redis,
      user: settings['redis-user'],
      password: settings['redis-password'],
      previousPassword: settings['redis-previous-password'],
      maxmemory: settings['redis-maxmemory'],
      memoryPercent: settings['redis-memory-percent'],
      tls: where.redis ? (serviceTls.redis ?? null) : null,
    },
    logs: { enabled: settings['log-rotation'] },
    monitoring: {
      pingUrl: settings['health-ping-url'],
      pingPath: settings['health-ping-path'],
      nodeExporter: settings['node-exporter'],
      nodeExporterListen: settings['node-exporter-listen'],
    },
    alerts: {
      webhook: settings['alert-webhook'],
      heartbeat: settings['alert-heartbeat-url'],
      diskPercent: settings['alert-disk-percent'],
      certificateDays: settings['alert-certificate-days'],
      restoreDays: settings['alert-restore-test-days'],
    },
  };
}

const ICON = { ok: '✅ ok', changed: '🔄 changed', warning: '⚠️ warning', failed: '❌ failed' } as const;

export function provisionSummary(results: ProvisionHostResult[], check: boolean): string {
  return results
    .map((r) => {
      const head = `### ${r.host}${r.os ? ` (${r.os})` : ''}: ${r.changed ?? 0} ${check ? 'would change' : 'changed'}, ${r.failed ?? 0} failed`;
      if (!r.items) return `${head}\n\n${r.error ?? ''}`;
      const rows = r.items.map(
        (i) => `| ${i.item} | ${ICON[i.status]} | ${i.detail.replace(/\|/g, '\\|').replace(/\n/g, ' ').slice(0, 500)} |`,
      );
      return [head, '', '| item | status | detail |', '|---|---|---|', ...rows].join('\n');
    })
    .join('\n\n');
}

export async function provision(opts: Settings<'provision'>, log: Log): Promise<ActionOutcome> {
  // A load balancer gets nginx in front of every api host, limited or not.
  const roles = resolveRoles(opts.hosts);
  const members = balancerMembers(opts.hosts.map((spec, i) => ({ spec, roles: roles[i]! })));
  const limited = opts.limit.length
    ? opts.hosts.filter((h, i) => opts.limit.some((l) => l === h.label || roles[i]![l as keyof (typeof roles)[0]] === true))
    : opts.hosts;
  if (limited.length === 0) throw new Error(`limit '${opts.limit.join(', ')}' selects no host; nothing was done`);
  let facts = new Map<Host, HostFacts>();
  // A db or redis host has no app units: what the app hosts' services log in
  // with is read there, under their locks, and its items refuse as on a single host.
  const guarded = limited.some((h) => {
    const r = roles[opts.hosts.indexOf(h)]!;
    return (r.db && opts.postgresql && !!opts['db-password']) || (r.redis && opts.redis && !!opts['redis-password']);
  });
  const where = topology(opts.hosts);
  const unread = opts.hosts.filter((h) => isAppHost(h) && !limited.includes(h)).map((h) => h.label);
  return withHosts<ActionOutcome, InUse[]>(
    { ...opts, hosts: limited },
    log,
    'provision',
    async (hosts, balancers, inUse) => {
      const elsewhere = guarded
        ? { logins: hosts.flatMap((h, i) => inUse[i]!.map((l) => ({ ...l, unit: `${l.unit} on ${h.spec.label}` }))), unread }
        : null;
      const all = [...hosts, ...balancers];
      const settingsOf = (
        host: Host,
        links?: Map<Host, ProvisionSettings['offsite']>,
        certificates: ServiceCertificates = {},
      ) =>
        provisionSettings(
          opts,
          host.roles,
          host.roles.lb ? members : null,
          links?.get(host),
          elsewhere,
          certificates,
        );
      // Every refusal on every host before the first change on any: before the
      // backup push keys and the Redis certificate too (no refusal reads them).
      const prechecks = await onEachHost(all, async (host) => ({
        items: await precheckHost(host, facts.get(host)!, settingsOf(host), log),
      }));
      const refused = prechecks.some((r) => !r.ok || r.items!.length);
      const results = refused
        ? prechecks.map(
            (r): ProvisionHostResult => ({
              host: r.host,
              ok: false,
              ...(r.ok
                ? {
                    items: r.items!,
                    failed: r.items!.length,
                    changed: 0,
                    error: r.items!.length
                      ? `refused before any change: ${r.items!.map((i) => i.item).join(', ')}`
                      : 'not provisioned: another host refused before any change',
                  }
                : { error: r.error }),
            }),
          )
        : await (async () => {
            // The redis and db hosts' certificates, made before any item: their app hosts trust them in the same run.
            const certificate = async (role: 'redis' | 'db', make: typeof redisTlsStep) => {
              const host = balancers.find((h) => h.roles[role]);
              const service = role === 'db' ? 'PostgreSQL' : 'Redis';
              return host
                ? await log.group(`The ${service} TLS certificate of ${host.spec.label}`, () =>
                    host.conn.step(make(where[role]!.address, opts.check, unread.length === 0)),
                  )
                : null;
            };
            const certificates: ServiceCertificates = {
              redis: opts.redis ? await certificate('redis', redisTlsStep) : null,
              postgresql: opts.postgresql
                ? await certificate('db', (address, check, replace) =>
                    postgresqlTlsStep(address, check, replace, opts.app),
                  )
                : null,
            };
            const links = await offsiteLinks(opts, all, log);
            return (await onEachHost(
              all,
              (host) =>
                log.group(`Provision ${host.spec.label}`, () =>
                  provisionHost(
                    host,
                    facts.get(host)!,
                    settingsOf(host, links, certificates),
                    freshConnectionTest(host, opts, log),
                    log,
                  ),
                ) as Promise<ProvisionHostResult & Record<string, unknown>>,
            )) as ProvisionHostResult[];
          })();
      const changed = results.reduce((n, r) => n + (r.changed ?? 0), 0);
      const failed = results.reduce((n, r) => n + (r.failed ?? 0), 0) + results.filter((r) => !r.items).length;
      const outputs = {
        changed: String(changed),
        failed: String(failed),
        python: results.find((r) => r.python)?.python ?? '',
      };
      const bad = results.filter((r) => !r.ok);
      return {
        outputs,
        results,
        summary:
          (opts.check ? '**Check mode**: nothing was changed; "changed" means "would change".\n\n' : '') +
          provisionSummary(results, opts.check),
        failure: bad.length ? bad.map((r) => `${r.host}: ${r.error}`).join('\n') : undefined,
      };
    },
    {
      lock: !opts.check,
      balancers: true,
      beforeLock: async (all) => void (facts = await readHostFacts(all, opts['allow-untested-os'])),
      underLock: guarded ? (h) => inUseStep(h.layout, opts['app-user']) : undefined,
    },
  );
}

export const run = () => runAction('provision', provision);
