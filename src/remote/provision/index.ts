// The provision items in the order they run, built from the settings: the
// package and account work first, the services next, and the two changes that
// could cut the runner off (firewall, sshd) late, each guarded by a fresh
// connection.

import { keyLines, script } from '../sh.js';
import { step, type Step } from '../step.js';
import { appItem } from './app.js';
import type { Item, ItemName } from './common.js';
import { firewallItem } from './firewall.js';
import { logsItem } from './logs.js';
import { monitoringItem } from './monitoring.js';
import { nginxItem } from './nginx.js';
import { postgresqlItem } from './postgresql.js';
import { pythonItem } from './python.js';
import { redisItem } from './redis.js';
import type { ProvisionSettings } from './settings.js';
import { sshItem } from './ssh.js';
import { sysctlItem, systemItem } from './system.js';
import { tlsItem } from './tls.js';
import { usersItem } from './users.js';

export type { ProvisionSettings } from './settings.js';
export { parseItemOutput, type Item, type ItemName, type ItemOutcome } from './common.js';

export interface HostFacts {
  os: string;
}

/** What the items need to know about a host before they are built, in one round trip. */
export function factsStep(): Step<HostFacts> {
  return step(
    'reading the host',
    script('echo "OS $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}")"'),
    (stdout) => ({ os: keyLines(stdout).get('OS')?.trim() || 'unknown' }),
  );
}

/** Every item with the input that switches it off, if any. */
export function planItems(
  settings: ProvisionSettings,
  _facts: HostFacts,
): { name: ItemName; item: Item | null; off?: string }[] {
  const on = <T>(flag: boolean, why: string, make: () => T) =>
    flag ? { item: make() } : { item: null, off: why };
  // A load balancer runs nginx only: none of the app's items.
  const app = <T>(make: () => T) => on(!settings.balancer, 'roles=lb: no app here', make);
  return [
    { name: 'system', ...on(settings.system.enabled, 'system: false', () => systemItem(settings)) },
    { name: 'sysctl', ...on(settings.system.enabled, 'system: false', () => sysctlItem(settings)) },
    { name: 'users', item: usersItem(settings) },
    { name: 'python', ...app(() => pythonItem(settings)) },
    { name: 'app', ...app(() => appItem(settings)) },
    {
      name: 'postgresql',
      ...(settings.balancer
        ? app(() => null)
        : on(settings.postgresql.enabled, 'postgresql: false', () => postgresqlItem(settings))),
    },
    {
      name: 'redis',
      ...(settings.balancer
        ? app(() => null)
        : on(settings.redis.enabled, 'redis: false', () => redisItem(settings))),
    },
    { name: 'nginx', ...on(settings.nginx.enabled, 'nginx: false', () => nginxItem(settings)) },
    { name: 'tls', ...on(settings.nginx.enabled, 'nginx: false', () => tlsItem(settings)) },
    { name: 'firewall', ...on(settings.firewall.enabled, 'firewall: false', () => firewallItem(settings)) },
    { name: 'ssh', ...on(settings.ssh.enabled, 'ssh-hardening: false', () => sshItem(settings)) },
    {
      name: 'logs',
      ...(settings.balancer
        ? app(() => null)
        : on(settings.logs.enabled, 'log-rotation: false', () => logsItem(settings))),
    },
    { name: 'monitoring', ...app(() => monitoringItem(settings)) },
  ];
}
