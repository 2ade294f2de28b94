// Credentials the app's services log in with: provision must not change one
// under them (they would fail on their next connection and stay broken until
// someone deploys). Read as the app user (mstool in-use): the environment of
// each serving process, and the env files they start from, so that a unit
// restarting at that moment, or a process that rewrote its own environment,
// is counted too. Only a hash of each password is printed.

import { createHash } from 'node:crypto';
import type { Layout } from '../layout.js';
import { pyToolDefinition } from '../pytool.js';
import { sh, textVar } from '../sh.js';
import { step, type Step } from '../step.js';
import type { ProvisionSettings } from './settings.js';

/** The hash the in-use lines carry for a password. */
export function passwordHash(password: string): string {
  return createHash('sha256').update(password, 'utf8').digest('hex');
}

/**
 * Script lines defining `in_use`, which prints a line per login a serving
 * service of the app uses: `<DATABASE_URL|REDIS_URL> <user, %-encoded> <sha256 of the password> <unit or file>`.
 * Serving: the api slot that takes traffic (the standby keeps the previous
 * release's env for a rollback), the workers (one still finishing its jobs too) and the scheduler.
 */
export function inUseFunction(layout: Layout, user: string): string {
  return [
    pyToolDefinition(),
    'in_use() {',
    '  local u slot sources=()',
    sh`  slot=$(cat ${layout.activeSlot} 2>/dev/null || true)`,
    sh`  case "$slot" in blue|green) sources+=(file ${layout.slots}/"$slot"/.env "the $slot api slot's release .env") ;; *) slot='*' ;; esac`,
    sh`  if [ -e ${layout.current} ]; then sources+=(file ${layout.current}/.env 'the current release .env'); fi`,
    sh`  for u in $(systemctl list-units --state=active,activating,deactivating,reloading --plain --no-legend --type=service ${`${layout.app}-api@`}"$slot".service ${layout.units.worker('*')} ${layout.units.legacyWorker} ${layout.units.scheduler} 2>/dev/null | awk '{ print $1 }'); do`,
    '    sources+=(env "$(systemctl show -p MainPID --value "$u")" "$u")',
    '  done',
    sh`  if id -u ${user} >/dev/null 2>&1; then mstool_as ${user} in-use "\${sources[@]}"; fi`,
    '}',
  ].join('\n');
}

/** A login a serving service uses, as `in_use` prints it. */
export interface InUse {
  variable: 'DATABASE_URL' | 'REDIS_URL';
  /** %-encoded, as the item scripts compare it. */
  user: string;
  hash: string;
  /** The unit or file, and on another host `… on <host>`. */
  unit: string;
}

/** Reads, as the app user, what the app's serving services on this host log in with. */
export function inUseStep(layout: Layout, user: string): Step<InUse[]> {
  return step(
    'reading the credentials the serving services use',
    [inUseFunction(layout, user), 'in_use'].join('\n'),
    (out) =>
      out.split('\n').flatMap((line) => {
        const m = /^(DATABASE_URL|REDIS_URL) (\S+) ([0-9a-f]{64}) (.+)$/.exec(line);
        return m ? [{ variable: m[1] as InUse['variable'], user: m[2]!, hash: m[3]!, unit: m[4]! }] : [];
      }),
  );
}

/**
 * What a db or redis host's items learn of the app hosts (read by the runner,
 * under their locks): the logins their serving services use, and the app
 * hosts left out of the run (limit), whose logins are unknown.
 */
export interface Elsewhere {
  logins: InUse[];
  unread: string[];
}

/** The app hosts not read, for a refusal: `the app hosts a, b were not read (limit: …)`. */
export function unreadNote(elsewhere: Elsewhere | null): string {
  return elsewhere?.unread.length
    ? `the app hosts ${elsewhere.unread.join(', ')} are not in this run (limit), so which passwords their services log in with is unknown`
    : '';
}

/**
 * Script lines defining `in_use` for an item: this host's logins of `variable`,
 * then the app hosts'. A hash only leaves the runner when `keep` says so (the
 * item compares it with what the host holds already); others become `-`, or
 * the hash of `known` when they match it.
 */
export function inUseLines(
  settings: Pick<ProvisionSettings, 'layout' | 'user' | 'elsewhere'>,
  variable: InUse['variable'],
  keep: (hash: string) => string,
): string {
  const local = inUseFunction(settings.layout, settings.user);
  const logins = settings.elsewhere?.logins.filter((l) => l.variable === variable) ?? [];
  if (!logins.length) return local;
  const lines = logins.map((l) => `${l.variable} ${l.user} ${keep(l.hash)} ${l.unit}`).join('\n');
  return [
    local.replace(/^in_use\(\) \{$/m, 'in_use_here() {'),
    textVar('elsewhere', lines),
    'in_use() { in_use_here; printf \'%s\\n\' "$elsewhere"; }',
  ].join('\n');
}
