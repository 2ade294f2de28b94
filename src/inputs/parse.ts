// Turns raw string inputs into one typed, validated settings object, or throws an
// InputError that lists every problem. Nothing else in the code reads raw inputs.

import { within, type Field } from './fields.js';
import { actions, type ActionName } from './actions.js';
import { findHost } from './hosts.js';
import { entriesFor, knownHostsName } from './known-hosts.js';
import { provisionChecks } from './provision.js';
import { passphraseProblem } from './ssh-key.js';

export class InputError extends Error {
  constructor(readonly problems: string[]) {
    super(
      problems.length === 1
        ? problems[0]
        : `${problems.length} inputs are invalid:\n- ${problems.join('\n- ')}`,
    );
    this.name = 'InputError';
  }
}

type Infer<F> = F extends Field<infer T> ? T : never;
export type SettingsOf<I extends Record<string, Field>> = { [K in keyof I]: Infer<I[K]> };
export type Settings<A extends ActionName> = SettingsOf<(typeof actions)[A]['inputs']>;

/** Reads a raw input by name; returns '' when it is not set. */
export type RawInputs = (name: string) => string;

/** Values of secret inputs, so the caller can mask them before anything is logged. */
export function secretValues(action: ActionName, raw: RawInputs): string[] {
  const inputs = actions[action].inputs as Record<string, Field>;
  return Object.entries(inputs)
    .filter(([, f]) => f.secret)
    .map(([name]) => raw(name))
    .filter((v) => v.length > 0);
}

/**
 * A raw value with its ends trimmed, as GitHub's core.getInput does (a YAML block
 * scalar gives "30\n"). A multi-line input keeps its leading line breaks, so line
 * numbers in messages stay those of the text as written (its parsers skip blank lines).
 */
export function trimInput(value: string, multiline = false): string {
  return multiline ? value.trimEnd().replace(/^[^\S\n]+/, '') : value.trim();
}

/**
 * Whether a message quotes any 8 characters of a secret. The builders of secret
 * fields never quote the value; this is the net under them, should one ever do.
 */
function quotesSecret(message: string, secret: string): boolean {
  // PEM armour lines are format, not secret, and messages about keys name them.
  const material = secret.replace(/-----(BEGIN|END) [A-Z0-9 ]+-----/g, '\n');
  for (let i = 0; i + 8 <= message.length; i++) if (material.includes(message.slice(i, i + 8))) return true;
  return false;
}

export function parseInputs<A extends ActionName>(action: A, raw: RawInputs): Settings<A> {
  const inputs = actions[action].inputs as Record<string, Field>;
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  const appRaw = raw('app').trim();
  const appValid = inputs.app ? inputs.app.schema.safeParse(appRaw).success : true;
  for (const [name, f] of Object.entries(inputs)) {
    let value = trimInput(raw(name), f.multiline);
    if (value === '' && f.default !== undefined) value = f.default;
    if (value === '' && f.required) {
      problems.push(`Input '${name}' is required: expected ${f.expected}.`);
      continue;
    }
    // {app} is a placeholder of settings, never of a secret (a password may hold the text).
    if (value.includes('{app}') && name !== 'app' && !f.secret) {
      // A value derived from an invalid app name would only repeat the app's error.
      if (!appValid) continue;
      value = value.replaceAll('{app}', appRaw);
    }
    const r = f.schema.safeParse(value);
    if (!r.success) {
      let why = r.error.issues[0]?.message ?? 'is not valid';
      if (f.secret && (!f.revealErrors || quotesSecret(why, value)))
        why = 'is not valid (the reason is withheld: the input is a secret)';
      problems.push(`Input '${name}': ${why}; expected ${f.expected}.`);
      continue;
    }
    out[name] = r.data;
  }
  if (problems.length === 0) problems.push(...crossChecks(out));
  if (problems.length) throw new InputError(problems);
  return out as Settings<A>;
}

function crossChecks(s: Record<string, unknown>): string[] {
  const problems: string[] = [];
  type Target = { host: string; port: number; label: string; roles: string[]; user?: string };
  // backup-verify names its hosts one by one instead of in `hosts`.
  const single = ['backup-host', 'restore-host']
    .map((k) => s[k] as Target | null | undefined)
    .filter((h): h is Target => !!h);
  const hosts = (s.hosts as Target[] | undefined) ?? (single.length ? single : undefined);
  if (hosts) {
    const insecure = s['insecure-accept-any-host-key'] === true;
    const known = s['known-hosts'] as ReturnType<typeof entriesFor> | null;
    if (!insecure) {
      if (!known) {
        problems.push(
          "Input 'known-hosts' is required: expected the hosts' keys as known_hosts lines (ssh-keyscan output verified out of band), " +
            'or insecure-accept-any-host-key: true.',
        );
      } else {
        const targets = [...hosts];
        const jump = s['jump-host'] as { host: string; port: number; label: string } | null;
        if (jump) targets.push({ ...jump, roles: [] });
        for (const h of targets) {
          if (entriesFor(known, h.host, h.port).filter((e) => !e.revoked).length === 0) {
            problems.push(
              `Input 'known-hosts' has no key for host '${h.label}' (looked for '${knownHostsName(h.host, h.port)}'); expected a known_hosts line for every host.`,
            );
          }
        }
      }
    }
    problems.push(...roleChecks(hosts, s));
  }
  if (typeof s['scratch-database'] === 'string' && s['scratch-database'] === s.database)
    problems.push(
      `Input 'scratch-database' is '${s.database}', the production database; expected another name (the scratch database is dropped afterwards).`,
    );
  if ('postgresql' in s && 'redis' in s) problems.push(...provisionChecks(s));
  if (typeof s['ssh-key'] === 'string') {
    const p = passphraseProblem(s['ssh-key'], (s['ssh-key-passphrase'] as string | undefined) ?? '');
    if (p) problems.push(p);
  }
  if (hosts) problems.push(...migrateHostCheck(hosts, s), ...appUserChecks(hosts, s));
  problems.push(...directoryChecks(s));
  return problems;
}

/** The migrate host is one of the app hosts (stages/migrate.ts pickMigrateHost finds it the same way). */
function migrateHostCheck(hosts: RoleTarget[], s: Record<string, unknown>): string[] {
  const named = s['migrate-host'];
  if (typeof named !== 'string' || !named) return [];
  const apps = hosts.filter((h) => !h.roles.includes('lb'));
  if (findHost(apps, named)) return [];
  const why = findHost(hosts, named) ? 'is a load balancer (roles=lb), which runs no app' : 'is not in hosts';
  return [
    `Input 'migrate-host': '${named}' ${why}; expected one of the app hosts as written in hosts: ${apps.map((h) => h.label).join(', ')}.`,
  ];
}

/**
 * The app user is none of the users that log in: provision removes the app
 * user's login shell, and the services run with its rights.
 */
function appUserChecks(hosts: { user?: string }[], s: Record<string, unknown>): string[] {
  const appUser = s['app-user'];
  if (typeof appUser !== 'string') return [];
  const jump = s['jump-host'] as { user?: string } | null | undefined;
  const logins = new Map<string, string>([
    ...hosts.filter((h) => h.user).map((h): [string, string] => [h.user!, 'a user in hosts']),
    ...(jump?.user ? [[jump.user, "jump-host's user"] as [string, string]] : []),
    [s['ssh-user'] as string, 'ssh-user'],
  ]);
  const as = logins.get(appUser);
  return as
    ? [
        `Input 'app-user': '${appUser}' is ${as}, which logs in over SSH (provision removes the app user's login shell); expected a user of the app's own.`,
      ]
    : [];
}

/** The app's directories stay apart: backups outside the app's tree, nginx never serving .env or backups. */
function directoryChecks(s: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const root = s['app-root'] as string | undefined;
  const backups = s['backup-dir'] as string | undefined;
  const statics = s['static-dir'] as string | undefined;
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

type RoleTarget = { label: string; host: string; port: number; roles: string[] };

function roleChecks(hosts: RoleTarget[], s: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const balancers = hosts.filter((h) => h.roles.includes('lb'));
  const apps = hosts.filter((h) => !h.roles.includes('lb'));
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
  const schedulerCommand = s['scheduler-command'];
  if (schedulers.length === 0 && Array.isArray(schedulerCommand) && schedulerCommand.length > 0) {
    problems.push(
      `Input 'hosts' gives no host the scheduler role, but scheduler-command is '${schedulerCommand.join(' ')}'; expected exactly one scheduler fleet-wide (add scheduler to one host's roles=, or set scheduler-command to '' for none).`,
    );
  }
  const migrators = apps.filter((h) => h.roles.includes('migrate'));
  if (migrators.length > 1) {
    problems.push(`Input 'hosts' gives the migrate role to ${migrators.length} hosts; expected at most one.`);
  }
  return problems;
}
