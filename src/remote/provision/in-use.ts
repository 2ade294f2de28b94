// Credentials the app's services log in with: provision must not change one
// under them (they would fail on their next connection and stay broken until
// someone deploys). Read as the app user (mstool in-use): the environment of
// each serving process, and the env files they start from, so that a unit
// restarting at that moment, or a process that rewrote its own environment,
// is counted too. Only a hash of each password is printed.

import { createHash } from 'node:crypto';
import type { Layout } from '../layout.js';
import { pyToolDefinition } from '../pytool.js';
import { sh } from '../sh.js';

/** The hash the in-use lines carry for a password. */
export function passwordHash(password: string): string {
  return createHash('sha256').update(password, 'utf8').digest('hex');
}

/**
 * Script lines defining `in_use`, which prints a line per login a serving
 * service of the app uses: `<DATABASE_URL|REDIS_URL> <user, %-encoded> <sha256 of the password> <unit or file>`.
 * Serving: the api slot that takes traffic (the standby keeps the previous
 * release's env for a rollback), the worker and the scheduler.
 */
export function inUseFunction(layout: Layout, user: string): string {
  return [
    pyToolDefinition(),
    'in_use() {',
    '  local u slot sources=()',
    sh`  slot=$(cat ${layout.activeSlot} 2>/dev/null || true)`,
    sh`  case "$slot" in blue|green) sources+=(file ${layout.slots}/"$slot"/.env "the $slot api slot's release .env") ;; *) slot='*' ;; esac`,
    sh`  if [ -e ${layout.current} ]; then sources+=(file ${layout.current}/.env 'the current release .env'); fi`,
    sh`  for u in $(systemctl list-units --state=active --plain --no-legend --type=service ${`${layout.app}-api@`}"$slot".service ${layout.units.worker} ${layout.units.scheduler} 2>/dev/null | awk '{ print $1 }'); do`,
    '    sources+=(env "$(systemctl show -p MainPID --value "$u")" "$u")',
    '  done',
    sh`  if id -u ${user} >/dev/null 2>&1; then mstool_as ${user} in-use "\${sources[@]}"; fi`,
    '}',
  ].join('\n');
}
