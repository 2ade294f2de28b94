// Database migrations for a release, on one host: back the database up, then
// run the migration command in the release (its venv, the app's .env, as the
// app user) while a PostgreSQL advisory lock keeps every other migration of
// the app waiting. Schema revisions before and after are recorded.

import type { Layout } from './layout.js';
import { rootOnly } from './paths.js';
import { pyToolDefinition } from './pytool.js';
import { keyLines, script, sh } from './sh.js';
import { step, type Step } from './step.js';

export const MIGRATE_LOCK_EXIT = 76;
export const MIGRATION_FAILED_EXIT = 77;

export interface MigrateScriptSettings {
  layout: Layout;
  /** The release whose code runs the command (the new one; for a downgrade, the one being left). */
  releaseId: string;
  user: string;
  command: string[];
  revisionCommand: string[];
  /** Where to record the revision after the command (release id), or null. */
  recordIn: string | null;
  backup: { label: string; keep: number } | null;
  lockTimeout: number;
  actor: string;
}

/** The shell fragments every migration script shares: the tool, the app runner, the database client. */
function prelude(settings: MigrateScriptSettings): string {
  const layout = settings.layout;
  const rel = layout.release(settings.releaseId);
  return script(
    pyToolDefinition(),
    sh`rel=${rel}`,
    sh`status=$(cat "$rel/.metalship/status" 2>/dev/null || echo missing)`,
    sh`if [ "$status" != ready ] && [ "$status" != bad ] || [ ! -x "$rel/.venv/bin/python" ]; then echo "release ${settings.releaseId} is $status on this host, not a complete release" >&2; exit 1; fi`,
    sh`run_app() { mstool_as ${settings.user} exec "$rel" ${layout.env} "$@"; }`,
    // psql and pg_dump run as the app user, with DATABASE_URL from its .env in
    // their environment: never on a command line, and peer-auth URLs work.
    sh`pg_app() { mstool_as ${settings.user} pg-exec ${layout.env} "$@"; }`,
    // The revision is the first word of the last line the revision command prints (alembic current: "0002 (head)").
    sh`revision() { { run_app ${settings.revisionCommand} 2>/dev/null || true; } | awk 'NF { last = $1 } END { print last }'; }`,
  );
}

/** Takes the app's migration advisory lock in a psql session that lives until the script ends. */
function advisoryLock(settings: MigrateScriptSettings): string {
  const key = `metalship-migrate:${settings.layout.app}`;
  const holderQuery = sh`SELECT a.application_name || ' (pid ' || a.pid || ', since ' || to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') || ')' FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'metalship-migrate%' LIMIT 1`;
  return script(
    sh`holder=$(pg_app psql -qAtX -c ${holderQuery} 2>/dev/null || true)`,
    sh`if [ -n "$holder" ]; then echo "waiting for the migration lock ${key}, held by $holder"; fi`,
    sh`coproc LOCK { export PGAPPNAME=${`metalship-migrate ${settings.releaseId} by ${settings.actor}`.slice(0, 63)}; pg_app psql -qAtX -v ON_ERROR_STOP=1 2>&1; }`,
    sh`printf '%s\n' ${`SET lock_timeout = '${settings.lockTimeout}s';`} ${`SELECT 'LOCKED' FROM pg_advisory_lock(hashtext('${key}'));`} >&"\${LOCK[1]}"`,
    'IFS= read -r locked <&"${LOCK[0]}" || locked=""',
    'case "$locked" in',
    '  LOCKED) ;;',
    '  *"lock timeout"*)',
    sh`    echo "another migration of ${settings.layout.app} holds the lock ${key} and did not finish within ${settings.lockTimeout} s: \${holder:-unknown holder}" >&2`,
    `    exit ${MIGRATE_LOCK_EXIT} ;;`,
    '  *)',
    '    echo "could not reach the database in DATABASE_URL to take the migration lock: ${locked:-no answer}" >&2',
    '    exit 1 ;;',
    'esac',
    sh`echo "took the migration lock ${key}"`,
  );
}

/**
 * The pre-migration dump: pg_dump runs as the app user, and root writes what it
 * prints into a directory outside the app's tree that only root can enter, so
 * the app can neither redirect nor swap a backup.
 */
function backupStep(settings: MigrateScriptSettings): string | null {
  if (!settings.backup) return null;
  const dir = settings.layout.preMigrateBackups;
  return script(
    '(',
    '  umask 077',
    rootOnly(dir),
    sh`  mkdir -p ${dir} && chmod 700 ${dir}`,
    sh`  backup=${dir}/${`${settings.layout.app}_${settings.releaseId}_${settings.backup.label}.dump`}`,
    '  if ! pg_app pg_dump -Fc --no-owner > "$backup.tmp"; then rm -f -- "$backup.tmp"; echo "the pre-migration backup (pg_dump) failed" >&2; exit 1; fi',
    '  mv -f -- "$backup.tmp" "$backup"',
    '  sum=$(sha256sum -- "$backup" | cut -d" " -f1)',
    '  echo "$sum  $(basename -- "$backup")" > "$backup.sha256"',
    '  echo "BACKUP $backup $sum $(stat -c %s -- "$backup")"',
    // Bounded retention: the newest `keep` pre-migration backups stay.
    sh`  find ${dir} -maxdepth 1 -name '*.dump' -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2- | tail -n +${settings.backup.keep + 1} | while IFS= read -r old; do rm -f -- "$old" "$old.sha256"; echo "removed old backup $old"; done`,
    ')',
  );
}

export function migrateScript(settings: MigrateScriptSettings): string {
  return script(
    prelude(settings),
    advisoryLock(settings),
    'before=$(revision)',
    'echo "REVISION_BEFORE ${before}"',
    backupStep(settings),
    sh`echo "running: ${settings.command.join(' ')}"`,
    // The app's output goes to stderr (still streamed): only our own lines are parsed.
    sh`if ! run_app ${settings.command} >&2; then echo "REVISION_AFTER $(revision)"; echo "the migration command failed" >&2; exit ${MIGRATION_FAILED_EXIT}; fi`,
    'after=$(revision)',
    'echo "REVISION_AFTER ${after}"',
    settings.recordIn
      ? sh`printf '%s\n' "$after" > ${settings.layout.release(settings.recordIn)}/.metalship/schema-revision`
      : null,
    sh`printf '%s\n' "$(date -u +%FT%TZ) migrated ${settings.releaseId}: \${before:-none} -> \${after:-none}" >> ${settings.layout.history}`,
    'printf "%s\\n" "SELECT pg_advisory_unlock_all();" "\\\\q" >&"${LOCK[1]}" || true',
  );
}

export interface MigrateOutput {
  before: string;
  after: string;
  backupPath: string;
  backupSha256: string;
  backupBytes: number;
}

/** The migration as a step: the revisions before and after, and the backup it took. */
export function migrateStep(settings: MigrateScriptSettings, what: string): Step<MigrateOutput> {
  return step(what, migrateScript(settings), (stdout) => {
    const out = keyLines(stdout);
    const [backupPath = '', backupSha256 = '', bytes = '0'] = (out.get('BACKUP') ?? '').trim().split(' ');
    return {
      before: out.get('REVISION_BEFORE')?.trim() ?? '',
      after: out.all('REVISION_AFTER').at(-1)?.trim() ?? '',
      backupPath,
      backupSha256,
      backupBytes: Number(bytes),
    };
  });
}
