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
  s: ProvisionSettings,
  _facts: HostFacts,
): { name: ItemName; item: Item | null; off?: string }[] {
  const on = <T>(flag: boolean, why: string, make: () => T) =>
    flag ? { item: make() } : { item: null, off: why };
  // A load balancer runs nginx only: none of the app's items.
  const app = <T>(make: () => T) => on(!s.balancer, 'roles=lb: no app here', make);
  return [
    { name: 'system', ...on(s.system.enabled, 'system: false', () => systemItem(s)) },
    { name: 'sysctl', ...on(s.system.enabled, 'system: false', () => sysctlItem(s)) },
    { name: 'users', item: usersItem(s) },
    { name: 'python', ...app(() => pythonItem(s)) },
    { name: 'app', ...app(() => appItem(s)) },
    {
      name: 'postgresql',
      ...(s.balancer
        ? app(() => null)
        : on(s.postgresql.enabled, 'postgresql: false', () => postgresqlItem(s))),
    },
    {
      name: 'redis',
      ...(s.balancer ? app(() => null) : on(s.redis.enabled, 'redis: false', () => redisItem(s))),
    },
    { name: 'nginx', ...on(s.nginx.enabled, 'nginx: false', () => nginxItem(s)) },
    { name: 'tls', ...on(s.nginx.enabled, 'nginx: false', () => tlsItem(s)) },
    { name: 'firewall', ...on(s.firewall.enabled, 'firewall: false', () => firewallItem(s)) },
    { name: 'ssh', ...on(s.ssh.enabled, 'ssh-hardening: false', () => sshItem(s)) },
    {
      name: 'logs',
      ...(s.balancer ? app(() => null) : on(s.logs.enabled, 'log-rotation: false', () => logsItem(s))),
    },
    { name: 'monitoring', ...app(() => monitoringItem(s)) },
  ];
}
