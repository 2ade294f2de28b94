// Provision settings from hostile inputs, and every script of their items: for
// test/unit/provision.test.ts and shellcheck (scripts/lint-scripts.ts).
import { provisionSettings, type ServiceCertificates } from '../../src/actions/provision.js';
import { parseInputs } from '../../src/inputs/parse.js';
import { planItems, type Item, type ProvisionSettings } from '../../src/remote/provision/index.js';
import type { PushKey } from '../../src/remote/offsite.js';
import { offsiteItem } from '../../src/remote/provision/offsite.js';
import { resolveRoles } from '../../src/stages/hosts.js';
import { FIXTURE_KEY } from './keys.js';

export const KEY_B64 = 'AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl';
const PRIVATE = FIXTURE_KEY;
export const base: Record<string, string> = {
  hosts: '10.0.0.5',
  app: 'shop',
  'ssh-key': PRIVATE,
  'known-hosts': `10.0.0.5 ssh-ed25519 ${KEY_B64}`,
  'redis-password': "r'p$(id)`x`",
  'db-password': 'it\'s; $(rm -rf /) \\ "q"',
  env: 'A=1\nSECRET="two\nlines"\nB=x\n',
};
export const raw =
  (v: Record<string, string>) =>
  (n: string): string | undefined =>
    v[n];

/** A redis host's certificate as the runner reads it (the PEM's shape; not a real certificate). */
export const REDIS_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake$(id)'x'\n-----END CERTIFICATE-----\n";
/** A db host's, likewise. */
export const POSTGRESQL_PEM = "-----BEGIN CERTIFICATE-----\nMIIBpg'$(id)\n-----END CERTIFICATE-----\n";

/** The settings of the first host in hosts (its roles as the action resolves them); a redis host's certificate read (this run made it). */
export function settings(
  extra: Record<string, string> = {},
  elsewhere: ProvisionSettings['elsewhere'] = null,
  certificates: ServiceCertificates = {
    redis: { certificate: REDIS_PEM, made: true },
    postgresql: { certificate: POSTGRESQL_PEM, made: true },
  },
): ProvisionSettings {
  const s = parseInputs('provision', raw({ ...base, ...extra }));
  const roles = resolveRoles(s.hosts)[0]!;
  return provisionSettings(
    s,
    roles.db || roles.redis ? roles : { worker: true, scheduler: true },
    null,
    undefined,
    elsewhere,
    certificates,
  );
}

/** What the runner read on two app hosts (hostile labels), one left out by limit. */
export const OTHER_HASH = 'ab'.repeat(32);
export const ELSEWHERE: NonNullable<ProvisionSettings['elsewhere']> = {
  logins: [
    {
      variable: 'DATABASE_URL',
      user: 'shop',
      hash: OTHER_HASH,
      unit: "shop-api@blue.service on 10.0.0.5 $(id) 'x'",
    },
    { variable: 'REDIS_URL', user: 'shop', hash: OTHER_HASH, unit: 'the current release .env on 10.0.0.6' },
  ],
  unread: ["10.0.0.7 $(id) 'q'"],
};

const known = (hosts: string[]) => hosts.map((h) => `${h} ssh-ed25519 ${KEY_B64}`).join('\n');
/** A database and Redis host with two app hosts (hosts input and known-hosts), the db host first when dbFirst. */
export function topologyInputs(dbFirst: boolean): Record<string, string> {
  const db = '10.0.0.9 roles=db,redis private=10.1.0.9';
  const apps = ['10.0.0.5 private=10.1.0.5', '10.0.0.6 upstream=10.1.0.6:8080'];
  return {
    hosts: (dbFirst ? [db, ...apps] : [...apps, db]).join('\n'),
    'known-hosts': known(['10.0.0.9', '10.0.0.5', '10.0.0.6']),
  };
}

export function allScripts(s: ProvisionSettings): string[] {
  return planItems(s, { os: 'Debian GNU/Linux 12 (bookworm)', id: 'debian', version: '12' }).flatMap((p) =>
    p.item ? [p.item.script, ...(p.item.guard ? [p.item.guard.confirm, p.item.guard.revert] : [])] : [],
  );
}

/** Settings that between them reach every item and branch. */
export const PROVISION_VARIANTS: Record<string, string>[] = [
  {},
  { check: 'true' },
  {
    domains: 'shop.example.com, www.shop.example.com',
    'acme-email': 'a@example.com',
    'db-remote-cidrs': '10.0.0.0/8',
    'deploy-user': 'deploy',
    'deploy-user-keys': `ssh-ed25519 ${KEY_B64} ci`,
    'python-install': 'pyenv',
    'python-version': '3.12',
    'health-ping-url': 'https://hc.example.com/ping/abc?x=%41',
    'alert-webhook': 'https://hooks.example.com/T0/B1/secret?x="$(id)"',
    'alert-heartbeat-url': 'https://hc.example.com/ping/def',
    'node-exporter': 'true',
    'ssh-root-login': 'no',
  },
  // The app's PostgreSQL and Redis on a host of their own: that host, and an app host.
  topologyInputs(true),
  { ...topologyInputs(true), check: 'true', 'db-remote-cidrs': '192.168.0.0/16' },
  topologyInputs(false),
  // A PostgreSQL password rotation under way: a login role besides the owner.
  { 'db-login-user': 'shop_b', 'db-previous-user': 'shop' },
];

/** A backup host's two keys, as pinned by a pusher. */
export const PUSH_TARGET = {
  address: '10.1.0.7',
  port: 2222,
  hostKeys: [`ssh-ed25519 ${KEY_B64}`, 'ecdsa-sha2-nistp256 AAAAE2VjZHNh'],
};

/** The hosts input with an app+db host and a backup host (first or second). */
export function backupHostInputs(backupFirst = false): Record<string, string> {
  const lines = ['10.0.0.5 private=10.1.0.5', `10.0.0.7 roles=backup private=${PUSH_TARGET.address}`];
  return {
    hosts: (backupFirst ? lines.reverse() : lines).join('\n'),
    'known-hosts': ['10.0.0.5', '10.0.0.7'].map((h) => `${h} ssh-ed25519 ${KEY_B64}`).join('\n'),
  };
}

/** The offsite item on each side of the link, and in check mode, with hostile settings. */
export function offsiteVariants(): Item[] {
  const pusher = (check: boolean) =>
    provisionSettings(
      parseInputs('provision', raw({ ...base, ...backupHostInputs(), check: String(check) })),
      { worker: true, scheduler: true },
      null,
      { pusher: true, push: PUSH_TARGET },
    );
  const receiver = (check: boolean, keys?: PushKey[]) =>
    provisionSettings(
      parseInputs('provision', raw({ ...base, ...backupHostInputs(true), check: String(check) })),
      { worker: false, scheduler: false, backup: true },
      null,
      { pusher: false, ...(keys ? { receive: keys } : {}) },
    );
  const keys = [{ from: "10.0.0.5 it's", key: `ssh-ed25519 ${KEY_B64}`, address: '10.1.0.5' }];
  return [
    pusher(false),
    pusher(true),
    { ...pusher(false), offsite: { pusher: true, push: null } },
    receiver(false, keys),
    receiver(true, keys),
    receiver(false),
  ].map((s) => offsiteItem(s).item!);
}
