// Inputs that must agree with each other, checked on typed settings: each check
// names the inputs it reads, and each action (src/inputs/actions.ts) lists the
// checks that apply to it. Messages name the input, the problem and what is expected.

import { within } from './fields.js';
import { serviceUrlCheck } from './service-urls.js';
import { findHost, isAppHost, ROLES, topologyProblems, type HostSpec, type Role } from './hosts.js';
import { entriesFor, knownHostsName, type KnownHostEntry } from './known-hosts.js';
import { passphraseProblem } from './ssh-key.js';

type Address = Pick<HostSpec, 'host' | 'port' | 'label'> & { user?: string };

/** What every host-touching action reads to connect. */
export interface ConnectionSettings {
  'ssh-user': string;
  'ssh-key': string;
  'ssh-key-passphrase': string;
  'known-hosts': KnownHostEntry[] | null;
  'insecure-accept-any-host-key': boolean;
  'jump-host': Address | null;
}

/** The SSH key opens with its passphrase, and every host (and the jump host) has a pinned key. */
export function connectionCheck(hosts: Address[], settings: ConnectionSettings): string[] {
  const problems: string[] = [];
  const known = settings['known-hosts'];
  if (!settings['insecure-accept-any-host-key']) {
    if (!known) {
      problems.push(
        "Input 'known-hosts' is required: expected the hosts' keys as known_hosts lines (ssh-keyscan output verified out of band), " +
          'or insecure-accept-any-host-key: true.',
      );
    } else {
      for (const h of [...hosts, ...(settings['jump-host'] ? [settings['jump-host']] : [])]) {
        if (entriesFor(known, h.host, h.port).filter((e) => !e.revoked).length === 0) {
          problems.push(
            `Input 'known-hosts' has no key for host '${h.label}' (looked for '${knownHostsName(h.host, h.port)}'); expected a known_hosts line for every host.`,
          );
        }
      }
    }
  }
  const passphrase = passphraseProblem(settings['ssh-key'], settings['ssh-key-passphrase']);
  return passphrase ? [...problems, passphrase] : problems;
}

/** Load balancers, exactly one scheduler, at most one migrating host, the db and redis hosts. */
export function rolesCheck(settings: { hosts: HostSpec[]; 'scheduler-command'?: string[] }): string[] {
  const problems: string[] = topologyProblems(settings.hosts);
  const balancers = settings.hosts.filter((h) => h.roles.includes('lb'));
  const apps = settings.hosts.filter(isAppHost);
  if (balancers.length && !apps.some((h) => h.roles.length === 0 || h.roles.includes('api')))
    problems.push(
      `Input 'hosts' has a load balancer (${balancers.map((h) => h.label).join(', ')}) but no api host behind it; expected at least one host with the api role.`,
    );
  if (!apps.some((h) => h.roles.length > 0)) return problems;
  const schedulers = apps.filter((h) => h.roles.includes('scheduler'));
  if (schedulers.length > 1) {
    problems.push(
      `Input 'hosts' gives the scheduler role to ${schedulers.length} hosts (${schedulers.map((h) => h.label).join(', ')}); expected exactly one scheduler fleet-wide.`,
    );
  }
  const schedulerCommand = settings['scheduler-command'] ?? [];
  if (schedulers.length === 0 && schedulerCommand.length > 0) {
    problems.push(
      `Input 'hosts' gives no host the scheduler role, but scheduler-command is '${schedulerCommand.join(' ')}'; expected exactly one scheduler fleet-wide (add scheduler to one host's roles=, or set scheduler-command to none).`,
    );
  }
  const migrators = apps.filter((h) => h.roles.includes('migrate'));
  if (migrators.length > 1) {
    problems.push(`Input 'hosts' gives the migrate role to ${migrators.length} hosts; expected at most one.`);
  }
  return problems;
}

/** The migrate host is one of the app hosts (stages/migrate.ts pickMigrateHost finds it the same way). */
export function migrateHostCheck(settings: { hosts: HostSpec[]; 'migrate-host': string }): string[] {
  const named = settings['migrate-host'];
  if (!named) return [];
  const apps = settings.hosts.filter(isAppHost);
  if (findHost(apps, named)) return [];
  const found = findHost(settings.hosts, named);
  const why = !found
    ? 'is not in hosts'
    : found.roles.includes('lb')
      ? 'is a load balancer (roles=lb), which runs no app'
      : `is the app's database or Redis host (roles=${found.roles.join(',')}), which runs no app`;
  return [
    `Input 'migrate-host': '${named}' ${why}; expected one of the app hosts as written in hosts: ${apps.map((h) => h.label).join(', ')}.`,
  ];
}

/**
 * The app user is none of the users that log in: provision removes the app
 * user's login shell, and the services run with its rights.
 */
export function appUserCheck(
  hosts: Address[],
  settings: ConnectionSettings & { 'app-user'?: string | undefined },
): string[] {
  const logins = new Map<string, string>([
    ...hosts.filter((h) => h.user).map((h): [string, string] => [h.user!, 'a user in hosts']),
    ...(settings['jump-host']?.user
      ? [[settings['jump-host'].user, "jump-host's user"] as [string, string]]
      : []),
    [settings['ssh-user'], 'ssh-user'],
  ]);
  const as = settings['app-user'] === undefined ? undefined : logins.get(settings['app-user']);
  return as
    ? [
        `Input 'app-user': '${settings['app-user']}' is ${as}, which logs in over SSH (provision removes the app user's login shell); expected a user of the app's own.`,
      ]
    : [];
}

/** The app's directories stay apart: backups outside the app's tree, nginx never serving .env or backups. */
export function directoriesCheck(settings: {
  'app-root'?: string;
  'backup-dir'?: string;
  'static-dir'?: string;
}): string[] {
  const problems: string[] = [];
  const root = settings['app-root'];
  const backups = settings['backup-dir'];
  const statics = settings['static-dir'];
  // Backups are root's alone (mode 700); the app tree is partly the app user's.
  if (root && backups && within(backups, root))
    problems.push(
      `Input 'backup-dir': '${backups}' is inside app-root '${root}'; expected a directory outside the app's tree.`,
    );
  else if (root && backups && within(root, backups))
    problems.push(
      `Input 'app-root': '${root}' is inside backup-dir '${backups}'; expected a directory apart from the backups.`,
    );
  if (statics && root) {
    // Inside app-root nginx may serve what is inside a release or shared data,
    // never the tree itself (.env, state, virtualenvs) or a whole release (code, its .env link).
    const inside = within(statics, root) ? statics.slice(root.length + 1).split('/') : null;
    const servable =
      !inside ||
      (inside[0] === 'current' || inside[0] === 'shared'
        ? inside.length >= 2
        : inside[0] === 'releases' && inside.length >= 3);
    if (within(root, statics) || !servable)
      problems.push(
        `Input 'static-dir': '${statics}' would let nginx serve app-root's own files (.env, code, state); expected a directory below ${root}/current/, ${root}/shared/ or outside app-root.`,
      );
  }
  if (statics && backups && (within(statics, backups) || within(backups, statics)))
    problems.push(
      `Input 'static-dir': '${statics}' would let nginx serve the backups in '${backups}'; expected a directory apart from backup-dir.`,
    );
  return problems;
}

/** The restore never goes into the production database. */
export function scratchCheck(s: { database: string; 'scratch-database': string }): string[] {
  return s['scratch-database'] === s.database
    ? [
        `Input 'scratch-database' is '${s.database}', the production database; expected another name (the scratch database is dropped afterwards).`,
      ]
    : [];
}

/** Provision's inputs that depend on each other. */
export function provisionCheck(settings: {
  hosts: HostSpec[];
  limit: string[];
  domains: string[];
  'acme-email': string;
  'python-install': string;
  'python-version': string;
  redis: boolean;
  'redis-password': string;
  postgresql: boolean;
  'db-password': string;
  'db-user': string;
  'db-login-user': string;
  'db-previous-user': string;
  'deploy-user': string;
  'deploy-user-keys': string[];
  'app-user': string;
  app: string;
  env: { values: Record<string, string> };
}): string[] {
  const problems: string[] = [];
  problems.push(...serviceUrlCheck(settings));
  for (const item of settings.limit) {
    // As written only: src/actions/provision.ts selects the limited hosts by label.
    if (!ROLES.includes(item as Role) && !settings.hosts.some((h) => h.label === item))
      problems.push(
        `Input 'limit': '${item}' is neither a host of the hosts input (as written there) nor a role; expected one of ${[...settings.hosts.map((h) => h.label), ...ROLES].join(', ')}.`,
      );
  }
  if (settings.domains.length && !settings['acme-email'])
    problems.push("Input 'acme-email' is required when 'domains' is set: expected an e-mail address.");
  if (settings['python-install'] === 'pyenv' && !settings['python-version'])
    problems.push(
      "Input 'python-version' is required with python-install: pyenv: expected a version such as 3.12.4.",
    );
  if (settings.redis && !settings['redis-password'])
    problems.push("Input 'redis-password' is required with redis: true: expected the app's Redis password.");
  const db = settings.hosts.find((h) => h.roles.includes('db'));
  if (db && settings.postgresql && !settings['db-password'])
    problems.push(
      `Input 'db-password' is required with a database host (${db.label} roles=db): expected the app's database password (app hosts log in over the network, where there is no peer authentication).`,
    );
  for (const input of ['db-login-user', 'db-previous-user'] as const)
    if (settings.postgresql && settings[input] && !settings['db-password'])
      problems.push(
        `Input '${input}' needs db-password: peer authentication (db-password empty) has no password to rotate.`,
      );
  const login = settings['db-login-user'] || settings['db-user'];
  if (settings.postgresql && settings['db-previous-user'] === login)
    problems.push(
      `Input 'db-previous-user' is the role db-password is set on (${login}): PostgreSQL keeps one password per role, so name the role the services log in as now.`,
    );
  if (settings['deploy-user'] && !settings['deploy-user-keys'].length)
    problems.push("Input 'deploy-user-keys' is required with deploy-user: expected authorized_keys lines.");
  if (settings['deploy-user'] && settings['deploy-user'] === settings['app-user'])
    problems.push("Input 'deploy-user' is the app user; expected another user (the app user has no login).");
  return problems;
}

/** The checks of the actions that migrate, on app hosts: migrate, rollback, deploy. */
export function migratingHostsCheck(
  settings: ConnectionSettings & {
    hosts: HostSpec[];
    'scheduler-command'?: string[];
    'migrate-host': string;
    'app-user'?: string | undefined;
  },
): string[] {
  return [
    ...connectionCheck(settings.hosts, settings),
    ...rolesCheck(settings),
    ...migrateHostCheck(settings),
    ...appUserCheck(settings.hosts, settings),
  ];
}
