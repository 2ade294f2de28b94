// Credentials the app's running services were started with: provision must not
// change one under them (they would fail on their next connection and stay
// broken until someone deploys). What they use is read where the kernel keeps
// it, each service's environment (/proc/<pid>/environ), never from a file the
// app user could change; only a hash of each password is printed.

import { createHash } from 'node:crypto';
import type { Layout } from '../layout.js';
import { sh, textVar } from '../sh.js';

const IN_USE_PY = `import hashlib, sys, urllib.parse
for arg in sys.argv[1:]:
    unit, _, pid = arg.rpartition('=')
    try:
        with open('/proc/%s/environ' % pid, 'rb') as f:
            data = f.read()
    except OSError:
        continue
    for item in data.split(b'\\0'):
        key, sep, value = item.partition(b'=')
        if not sep or key not in (b'DATABASE_URL', b'REDIS_URL'):
            continue
        try:
            url = urllib.parse.urlsplit(value.decode('utf-8', 'replace'))
            password, user = url.password, url.username
        except ValueError:
            continue
        if password is None:
            continue
        digest = hashlib.sha256(urllib.parse.unquote(password).encode()).hexdigest()
        print(key.decode(), urllib.parse.quote(urllib.parse.unquote(user or ''), safe='') or '-', digest, unit)`;

/** The hash the in-use lines carry for a password. */
export function passwordHash(password: string): string {
  return createHash('sha256').update(password, 'utf8').digest('hex');
}

/**
 * Script lines defining `in_use`, which prints a line per credential a service
 * of the app that serves uses: `<DATABASE_URL|REDIS_URL> <user, %-encoded, or -> <sha256 of the password> <unit>`.
 * The api slot that serves (the standby keeps the previous release's env for a
 * rollback; it takes no traffic), the worker and the scheduler.
 */
export function inUseFunction(layout: Layout): string {
  return [
    textVar('in_use_py', IN_USE_PY),
    'in_use() {',
    '  local u slot pids=()',
    sh`  slot=$(cat ${layout.activeSlot} 2>/dev/null || true)`,
    sh`  case "$slot" in blue|green) ;; *) slot='*' ;; esac`,
    sh`  for u in $(systemctl list-units --state=active --plain --no-legend --type=service ${`${layout.app}-api@`}"$slot".service ${layout.units.worker} ${layout.units.scheduler} 2>/dev/null | awk '{ print $1 }'); do`,
    '    pids+=("$u=$(systemctl show -p MainPID --value "$u")")',
    '  done',
    '  if [ "${#pids[@]}" -gt 0 ]; then python3 -I -c "$in_use_py" "${pids[@]}"; fi',
    '}',
  ].join('\n');
}
