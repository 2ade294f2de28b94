// Before provision's items: the link between the hosts that take backups and
// the backup host (roles=backup), which both sides need in one run. Each pusher
// gets its push key (made when missing) and the backup host's keys (read over
// the runner's pinned connection: the pusher never trusts a key on first use);
// the backup host gets the pushers' public keys.

import { isIP } from 'node:net';
import { privateAddress, topology, type HostSpec } from '../inputs/hosts.js';
import type { Log } from '../log.js';
import { hostKeysStep, pushKeyStep, type PushKey } from '../remote/offsite.js';
import type { ProvisionSettings } from '../remote/provision/index.js';
import { resolveRoles, type Host } from './hosts.js';

/** Does a host of these roles take the app's backups (the app's PostgreSQL is there)? */
export function takesBackups(
  roles: Pick<Host['roles'], 'db' | 'lb' | 'redis' | 'backup'>,
  dbHost: boolean,
  postgresql: boolean,
): boolean {
  return postgresql && (roles.db || (!dbHost && !roles.lb && !roles.redis && !roles.backup));
}

/**
 * The address the backup host sees a pusher's connections come from, when the
 * hosts input tells it: its private= (the backup host is then reached on that
 * network, as pg_hba and ufw assume), or, when the backup host has no private=
 * either, its own address. Otherwise (its source on the backup host's private
 * network is unknown), or when it is a name (sshd matches no names: UseDNS
 * no), nothing, and the key is accepted from anywhere.
 */
export function pushSource(pusher: HostSpec, hosts: HostSpec[]): string | undefined {
  const backup = hosts.find((h) => h.roles.includes('backup'));
  const address = pusher.private ?? (backup?.private === undefined ? privateAddress(pusher) : undefined);
  return address !== undefined && isIP(address) ? address : undefined;
}

/** Each connected host's part of the link; hosts outside it get { pusher: false }. */
export async function offsiteLinks(
  opts: { app: string; hosts: HostSpec[]; postgresql: boolean; check: boolean },
  connected: Host[],
  log: Log,
): Promise<Map<Host, ProvisionSettings['offsite']>> {
  const links = new Map<Host, ProvisionSettings['offsite']>();
  const where = topology(opts.hosts);
  const roles = resolveRoles(opts.hosts);
  const pushers = opts.hosts.filter((_, i) => takesBackups(roles[i]!, !!where.db, opts.postgresql));
  const target = where.backup;
  const backupHost = connected.find((h) => h.spec.roles.includes('backup'));
  for (const h of connected) links.set(h, { pusher: pushers.includes(h.spec) });
  if (!target || !opts.postgresql) {
    for (const h of connected) if (links.get(h)!.pusher) links.set(h, { pusher: true, push: null });
    return links;
  }
  const hostKeys = backupHost
    ? await log.group(`Reading the host keys of ${backupHost.spec.label}`, () =>
        backupHost.conn.step(hostKeysStep()),
      )
    : null;
  if (backupHost && !hostKeys?.length)
    throw new Error(`${backupHost.spec.label} has no SSH host key in /etc/ssh`);
  const keys: PushKey[] = [];
  for (const h of connected.filter((c) => links.get(c)!.pusher)) {
    const key = await log.group(`The backup push key of ${h.spec.label}`, () =>
      h.conn.step(pushKeyStep(opts.app, opts.check)),
    );
    const address = pushSource(h.spec, opts.hosts);
    if (key) keys.push({ from: h.spec.label, key, ...(address ? { address } : {}) });
    if (hostKeys)
      links.set(h, { pusher: true, push: { address: target.address, port: target.port, hostKeys } });
  }
  // The receiver's keys are rewritten only when every pusher is in this run (a limit leaves them).
  const all = pushers.every((p) => connected.some((c) => c.spec === p));
  if (backupHost) links.set(backupHost, { pusher: false, ...(all ? { receive: keys } : {}) });
  return links;
}
