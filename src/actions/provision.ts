// provision: converge each host to the standard, item by item, and report
// ok / changed / warning / failed per item (check: true only reports).

import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { layout } from '../remote/layout.js';
import type { ProvisionSettings } from '../remote/provision/index.js';
import type { BalancerMember } from '../remote/balancer.js';
import { onEachHost, resolveRoles, withHosts } from '../stages/hosts.js';
import { balancerMembers } from '../stages/rollout.js';
import { freshConnectionTest, provisionHost, type ProvisionHostResult } from '../stages/provision.js';
import { runAction, type ActionOutcome } from './run.js';

export function provisionSettings(
  s: Settings<'provision'>,
  roles: { worker: boolean; scheduler: boolean },
  balancer: BalancerMember[] | null = null,
): ProvisionSettings {
  return {
    balancer,
    layout: layout(s.app, s['app-root']),
    check: s.check,
    user: s['app-user'],
    roles,
    appModule: s['app-module'],
    uvicornArgs: s['uvicorn-args'],
    workerCommand: s['worker-command'],
    schedulerCommand: s['scheduler-command'],
    healthPath: s['health-path'],
    system: { enabled: s.system, securityUpdates: s['security-updates'] },
    firewall: { enabled: s.firewall, allow: s['firewall-allow'] },
    ssh: { enabled: s['ssh-hardening'], rootLogin: s['ssh-root-login'] },
    deployUser: s['deploy-user'] ? { name: s['deploy-user'], keys: s['deploy-user-keys'] } : null,
    python: { install: s['python-install'], version: s['python-version'] },
    env: s.env.text,
    nginx: { enabled: s.nginx, staticDir: s['static-dir'] },
    tls: { domains: s.domains, email: s['acme-email'], server: s['acme-server'], caBundle: s['acme-ca-bundle'] },
    postgresql: {
      enabled: s.postgresql,
      database: s['db-name'],
      user: s['db-user'],
      password: s['db-password'],
      remoteCidrs: s['db-remote-cidrs'],
      backupDir: s['backup-dir'],
      keepDays: s['backup-keep-days'],
      schedule: s['backup-schedule'],
    },
    redis: {
      enabled: s.redis,
      user: s['redis-user'],
      password: s['redis-password'],
      maxmemory: s['redis-maxmemory'],
      memoryPercent: s['redis-memory-percent'],
    },
    logs: { enabled: s['log-rotation'] },
    monitoring: {
      pingUrl: s['health-ping-url'],
      nodeExporter: s['node-exporter'],
      nodeExporterListen: s['node-exporter-listen'],
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

export async function provision(s: Settings<'provision'>, log: Log): Promise<ActionOutcome> {
  // The .env's values are masked one by one too (the whole text and each line already are).
  for (const v of Object.values(s.env.values)) log.secret(v);
  // A load balancer gets nginx in front of every api host, limited or not.
  const roles = resolveRoles(s.hosts);
  const members = balancerMembers(s.hosts.map((spec, i) => ({ spec, roles: roles[i]! })));
  const limited = s.limit.length
    ? s.hosts.filter((h, i) => s.limit.some((l) => l === h.label || roles[i]![l as keyof (typeof roles)[0]] === true))
    : s.hosts;
  if (limited.length === 0) throw new Error(`limit '${s.limit.join(', ')}' selects no host; nothing was done`);
  return withHosts(
    { ...s, hosts: limited },
    log,
    'provision',
    async (hosts, balancers) => {
      const results = (await onEachHost([...hosts, ...balancers], (host) => {
        const settings = provisionSettings(
          s,
          { worker: host.roles.worker, scheduler: host.roles.scheduler },
          host.roles.lb ? members : null,
        );
        return log.group(`Provision ${host.spec.label}`, () =>
          provisionHost(host, settings, freshConnectionTest(host, s, log), log),
        ) as Promise<ProvisionHostResult & Record<string, unknown>>;
      })) as ProvisionHostResult[];
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
          (s.check ? '**Check mode**: nothing was changed; "changed" means "would change".\n\n' : '') +
          provisionSummary(results, s.check),
        failure: bad.length ? bad.map((r) => `${r.host}: ${r.error}`).join('\n') : undefined,
      };
    },
    { lock: !s.check, balancers: true },
  );
}

export const run = () => runAction('provision', provision);
