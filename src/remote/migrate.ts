// Database migrations for a release, on one host: back the database up, then
// run the migration command in the release (its venv, the app's .env, as the
// app user) while a PostgreSQL advisory lock keeps every other migration of
// the app waiting. Schema revisions before and after are recorded.

import type { Layout } from './layout.js';
import { rootOnly } from './paths.js';
import { pyToolDefinition } from './pytool.js';
import { keyLines, raw, script, sh } from './sh.js';
import { step, type Step } from './step.js';
import { importCheckLine } from './release.js';

export const MIGRATE_LOCK_EXIT = 76;
export const MIGRATION_FAILED_EXIT = 77;

/**
 * alembic's command line run by the release's python: works without the
 * `alembic` script (a venv with system-site-packages has none), and with
 * alembic before 1.5, which has no `python -m alembic`. Says what is missing
 * instead of a traceback.
 */
const ALEMBIC_MAIN = [
  'import sys',
  'try:',
  '    from alembic.config import main',
  'except ImportError as e:',
  '    sys.exit("alembic cannot be imported by the release\'s python (%s): add alembic to the requirements, or set the command input" % e)',
  'sys.exit(main(prog="alembic"))',
].join('\n');

/** A command input as run: its words, or when empty (the default) alembic with `args`. */
export function orAlembic(words: string[], ...args: string[]): string[] {
  return words.length ? words : ['python', '-c', ALEMBIC_MAIN, ...args];
}

/** A command as the log shows it: the default by what it does. */
function commandText(command: string[]): string {
  return command[2] === ALEMBIC_MAIN
    ? `alembic ${command.slice(3).join(' ')} (alembic.config.main, by the release's python)`
    : command.join(' ');
}

/** Whether a command is the default alembic upgrade to the head: a no-op once the head is applied. */
export function isAlembicUpgradeHead(command: string[]): boolean {
  return command[2] === ALEMBIC_MAIN && command.slice(3).join(' ') === 'upgrade head';
}

export interface MigrateScriptSettings {
  layout: Layout;
  /** The release whose code runs the command (the new one; for a downgrade, the one being left). */
  releaseId: string;
  user: string;
  command: string[];
  revisionCommand: string[];
  /** Where to record the revision after the command (release id), or null. */
  recordIn: string | null;
  /**
   * The checksum of the migration's files and commands (computed on the runner
   * from what it sends), or null when they are not known. With recordIn: when
   * the current release and the app's state both record this checksum with a
   * revision, the migration is skipped; after a migration it is recorded.
   */
  fingerprint: string | null;
  backup: { label: string; keep: number } | null;
  /**
   * The app module to import before migrating (a deploy checks here, not at
   * release time: a migration with nothing to do needs no import, and each
   * host's start of the new release is its own check).
   */
  importCheck?: string | null;
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
    sh`run_app() { mstool_as ${settings.user} exec "$rel" "$rel/.env" "$@"; }`,
    // psql and pg_dump run as the app user, with DATABASE_URL from the release's .env in
    // their environment: never on a command line, and peer-auth URLs work.
    sh`pg_app() { mstool_as ${settings.user} pg-exec "$rel/.env" "$@"; }`,
    // The last line the revision command prints (alembic current: "0002 (head)"); the revision is its first word.
    sh`revision_line() { { run_app ${settings.revisionCommand} 2>/dev/null || true; } | awk 'NF { last = $0 } END { print last }'; }`,
    "revision() { revision_line | awk '{ print $1 }'; }",
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

/** Where the applied migration is recorded: in the app's state (root's, 700) and in each release's metadata. */
const RECORD = 'migrations';

/**
 * Records the revision (and the fingerprint, when known) in the release; the
 * app's state keeps the fingerprint of what was last applied to the database.
 */
function record(settings: MigrateScriptSettings, variable: 'before' | 'after'): string | null {
  const revision = raw(`"$${variable}"`);
  if (!settings.recordIn) return null;
  const meta = `${settings.layout.release(settings.recordIn)}/.metalship`;
  return script(
    sh`printf '%s\n' ${revision} > ${meta}/schema-revision`,
    settings.fingerprint
      ? script(
          sh`printf '%s %s\n' ${settings.fingerprint} ${revision} > ${meta}/${RECORD}`,
          sh`cp -f -- ${meta}/${RECORD} ${settings.layout.state}/${RECORD}`,
        )
      : null,
  );
}

/**
 * Nothing Python can avoid: when the current release applied exactly these
 * migration files and the app's state says they were the last applied, the
 * schema is at their head already. No alembic runs and no lock is taken: one
 * query checks that the database is still at the recorded revision (a restored
 * dump or another DATABASE_URL migrates). Both records are root's: the app user
 * can fake neither.
 */
function skipUnchanged(settings: MigrateScriptSettings): string | null {
  if (!settings.fingerprint || !settings.recordIn) return null;
  const layout = settings.layout;
  return script(
    'unchanged=0',
    sh`cur=$(basename "$(readlink ${layout.current} 2>/dev/null)" 2>/dev/null || true)`,
    sh`applied=$(cat ${layout.state}/${RECORD} 2>/dev/null || true)`,
    sh`if [ -n "$cur" ] && [ "\${applied%% *}" = ${settings.fingerprint} ] && [ -n "\${applied#* }" ] && [ "$applied" = "$(cat ${layout.releases}/"$cur"/.metalship/${RECORD} 2>/dev/null)" ]; then`,
    // The records are about the files; the database itself must still be at
    // that revision (a restored dump, another DATABASE_URL): one query, no alembic.
    "  in_db=$(pg_app psql -qAtX -c 'SELECT version_num FROM alembic_version' 2>/dev/null | tr '\\n' ' ' || true)",
    '  if [ "$in_db" = "${applied#* } " ]; then unchanged=1; else echo "the database is at ${in_db:-no revision}, not at the recorded ${applied#* }: migrating"; fi',
    'fi',
    'if [ "${unchanged:-0}" = 1 ]; then',
    '  before=${applied#* }',
    '  echo "REVISION_BEFORE ${before}"',
    '  echo "REVISION_AFTER ${before}"',
    sh`  echo "SKIPPED the migration files are those $cur applied (schema at $before): nothing to migrate"`,
    record(settings, 'before'),
    sh`  printf '%s\n' "$(date -u +%FT%TZ) migrated ${settings.releaseId}: nothing to do, the files of $cur (\${before})" >> ${layout.history}`,
    '  exit 0',
    'fi',
  );
}

export function migrateScript(settings: MigrateScriptSettings): string {
  // Only alembic's own `current` says what "(head)" means for these files.
  const atHeadSkips =
    isAlembicUpgradeHead(settings.command) &&
    settings.revisionCommand[2] === ALEMBIC_MAIN &&
    settings.revisionCommand.slice(3).join(' ') === 'current';
  return script(
    prelude(settings),
    skipUnchanged(settings),
    settings.importCheck
      ? importCheckLine(settings.layout.release(settings.releaseId), settings.user, settings.importCheck)
      : null,
    advisoryLock(settings),
    // The database is about to change, or be read anew: what was last applied is no longer known.
    sh`rm -f -- ${settings.layout.state}/${RECORD}`,
    'before_line=$(revision_line)',
    'before=${before_line%% *}',
    'echo "REVISION_BEFORE ${before}"',
    atHeadSkips
      ? script(
          // alembic current marks the head: upgrading to it is a no-op, which needs no backup.
          'case "$before_line" in',
          '  *"(head)"*)',
          '    echo "REVISION_AFTER ${before}"',
          '    echo "SKIPPED the schema is at the head (${before}): nothing to migrate"',
          record(settings, 'before'),
          sh`    printf '%s\n' "$(date -u +%FT%TZ) migrated ${settings.releaseId}: nothing to do, at the head (\${before})" >> ${settings.layout.history}`,
          '    exit 0 ;;',
          'esac',
        )
      : null,
    backupStep(settings),
    sh`echo ${`running: ${commandText(settings.command)}`}`,
    // The app's output goes to stderr (still streamed): only our own lines are parsed.
    sh`if ! run_app ${settings.command} >&2; then echo "REVISION_AFTER $(revision)"; echo "the migration command failed" >&2; exit ${MIGRATION_FAILED_EXIT}; fi`,
    'after=$(revision)',
    'echo "REVISION_AFTER ${after}"',
    record(settings, 'after'),
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
  /** Why nothing ran (empty when the command ran). */
  skipped: string;
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
      skipped: out.get('SKIPPED')?.trim() ?? '',
    };
  });
}
