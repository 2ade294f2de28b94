// The provision items in the order they run, built from the settings: the
// package and account work first, the services next, and the two changes that
// could cut the runner off (firewall, sshd) late, each guarded by a fresh
// connection.

import { keyLines, script } from '../sh.js';
import { step, type Step } from '../step.js';
import { alertsItem } from './alerts.js';
import { appItem } from './app.js';
import type { Item, ItemName } from './common.js';
import { firewallItem } from './firewall.js';
import { logsItem } from './logs.js';
import { monitoringItem } from './monitoring.js';
import { nginxItem } from './nginx.js';
import { offsiteItem } from './offsite.js';
import { postgresqlClientItem, postgresqlItem } from './postgresql.js';
import { pythonItem } from './python.js';
import { redisCaItem, redisItem } from './redis.js';
import { hasSite, type ProvisionSettings } from './settings.js';
import { sshItem } from './ssh.js';
import { sysctlItem, systemItem } from './system.js';
import { tlsItem } from './tls.js';
import { usersItem } from './users.js';

export type { ProvisionSettings } from './settings.js';
export {
  guardStep,
  itemStep,
  precheckStep,
  parseItemOutput,
  type Item,
  type ItemName,
  type ItemOutcome,
  type ItemReport,
} from './common.js';

export interface HostFacts {
  /** The distribution's name for itself (PRETTY_NAME). */
  os: string;
  /** os-release's ID and VERSION_ID: debian 12, ubuntu 24.04. */
  id: string;
  version: string;
}

/**
 * The releases provision knows the configuration of (tested on Debian 11, 12 and
 * 13 hosts; Ubuntu's LTS releases have the same components in between).
 */
export const KNOWN_SYSTEMS: Record<string, string[]> = {
  debian: ['11', '12', '13'],
  ubuntu: ['22.04', '24.04'],
};

/** Why provision will not touch this system, or null when it knows it. */
export function unknownSystem(facts: HostFacts): string | null {
  if (KNOWN_SYSTEMS[facts.id]?.includes(facts.version)) return null;
  const known = Object.entries(KNOWN_SYSTEMS)
    .map(([id, versions]) => `${id} ${versions.join(', ')}`)
    .join('; ');
  return `${facts.os} (${facts.id || 'no ID'} ${facts.version || 'no VERSION_ID'}) is a system provision has not been tested on (it knows ${known}): nothing was changed. Set allow-untested-os: true to provision it anyway`;
}

/** What the items need to know about a host before they are built, in one round trip. */
export function factsStep(): Step<HostFacts> {
  return step(
    'reading the host',
    script(
      '( . /etc/os-release 2>/dev/null; echo "OS ${PRETTY_NAME:-unknown}"; echo "OS_ID ${ID:-}"; echo "OS_VERSION ${VERSION_ID:-}" )',
    ),
    (stdout) => {
      const out = keyLines(stdout);
      return {
        os: out.get('OS')?.trim() || 'unknown',
        id: out.get('OS_ID')?.trim() ?? '',
        version: out.get('OS_VERSION')?.trim() ?? '',
      };
    },
  );
}

/** Every item with the input that switches it off, if any. */
export function planItems(
  settings: ProvisionSettings,
  _facts: HostFacts,
): { name: ItemName; item: Item | null; off?: string }[] {
  const on = <T>(flag: boolean, why: string, make: () => T) =>
    flag ? { item: make() } : { item: null, off: why };
  const { serves, topology } = settings;
  const apart = settings.balancer
    ? 'roles=lb'
    : serves.db || serves.redis || serves.backup
      ? `roles=${[serves.db && 'db', serves.redis && 'redis', serves.backup && 'backup'].filter(Boolean).join(',')}`
      : null;
  // A load balancer runs nginx only, a database or Redis host that only: none of the app's items.
  const app = <T>(make: () => T) => on(!apart, `${apart}: no app here`, make);
  const site = <T>(make: () => T) =>
    hasSite(settings)
      ? on(settings.nginx.enabled, 'nginx: false', make)
      : { item: null, off: `${apart}: no site here` };
  return [
    { name: 'system', ...on(settings.system.enabled, 'system: false', () => systemItem(settings)) },
    { name: 'sysctl', ...on(settings.system.enabled, 'system: false', () => sysctlItem(settings)) },
    { name: 'users', item: usersItem(settings) },
    { name: 'python', ...app(() => pythonItem(settings)) },
    { name: 'app', ...app(() => appItem(settings)) },
    {
      name: 'postgresql',
      ...(serves.db
        ? on(settings.postgresql.enabled, 'postgresql: false', () => postgresqlItem(settings))
        : apart
          ? app(() => null)
          : topology.db
            ? // The pre-migration backup's pg_dump runs here, against the db host.
              on(settings.postgresql.enabled, 'postgresql: false', () => postgresqlClientItem(settings))
            : on(settings.postgresql.enabled, 'postgresql: false', () => postgresqlItem(settings))),
    },
    {
      name: 'redis',
      ...(serves.redis
        ? on(settings.redis.enabled, 'redis: false', () => redisItem(settings))
        : apart
          ? app(() => null)
          : topology.redis
            ? // The redis host's certificate, which REDIS_URL trusts.
              on(settings.redis.enabled, 'redis: false', () => redisCaItem(settings))
            : on(settings.redis.enabled, 'redis: false', () => redisItem(settings))),
    },
    { name: 'nginx', ...site(() => nginxItem(settings)) },
    { name: 'tls', ...site(() => tlsItem(settings)) },
    { name: 'firewall', ...on(settings.firewall.enabled, 'firewall: false', () => firewallItem(settings)) },
    { name: 'ssh', ...on(settings.ssh.enabled, 'ssh-hardening: false', () => sshItem(settings)) },
    {
      name: 'logs',
      ...(apart
        ? app(() => null)
        : on(settings.logs.enabled, 'log-rotation: false', () => logsItem(settings))),
    },
    { name: 'monitoring', ...app(() => monitoringItem(settings)) },
    // Every host's: the db host's backups fail there, a load balancer's nginx and certificate there.
    { name: 'alerts', item: alertsItem(settings) },
    // After the firewall and sshd: the receiving user logs in through them.
    { name: 'offsite', ...offsiteItem(settings) },
  ];
}
