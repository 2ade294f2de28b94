// Turns raw string inputs into one typed, validated settings object, or throws an
// InputError that lists every problem. Nothing else in the code reads raw inputs.

import type { Field } from './fields.js';
import { actions, type ActionName } from './actions.js';
import { entriesFor, knownHostsName } from './known-hosts.js';
import { provisionChecks } from './provision.js';

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

export function parseInputs<A extends ActionName>(action: A, raw: RawInputs): Settings<A> {
  const inputs = actions[action].inputs as Record<string, Field>;
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  const appRaw = raw('app').trim();
  const appValid = inputs.app ? inputs.app.schema.safeParse(appRaw).success : true;
  for (const [name, f] of Object.entries(inputs)) {
    let value = raw(name);
    // Multi-line values (keys, known_hosts, dotenv) keep their inner layout; others are trimmed.
    if (!f.secret && !value.includes('\n')) value = value.trim();
    if (value === '' && f.default !== undefined) value = f.default;
    if (value === '' && f.required) {
      problems.push(`Input '${name}' is required: expected ${f.expected}.`);
      continue;
    }
    if (value.includes('{app}') && name !== 'app') {
      // A value derived from an invalid app name would only repeat the app's error.
      if (!appValid) continue;
      value = value.replaceAll('{app}', appRaw);
    }
    const r = f.schema.safeParse(value);
    if (!r.success) {
      const why =
        f.secret && !f.revealErrors ? 'is not valid' : (r.error.issues[0]?.message ?? 'is not valid');
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
  type Target = { host: string; port: number; label: string; roles: string[] };
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
  if (s['app-user'] === 'root')
    problems.push(
      "Input 'app-user' is 'root'; expected an unprivileged user (the services must not run as root).",
    );
  return problems;
}

type RoleTarget = { label: string; roles: string[] };

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
