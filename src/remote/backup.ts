// PostgreSQL backups: the backup program installed on a database host, its
// daily timer, and a one-off run. Pure functions from settings to bash.
//
// One backup is three files in the backup directory (700, root):
//   <database>_<YYYYmmddTHHMMSSZ>_<label>.dump            pg_dump -Fc
//   <database>_<YYYYmmddTHHMMSSZ>_<label>.globals.sql     pg_dumpall --globals-only
//   <database>_<YYYYmmddTHHMMSSZ>_<label>.manifest.json   written last, atomically
// The manifest's row counts are taken in the same snapshot as the dump, so a
// restore must reproduce them exactly.

import { execLine, unitText } from './quoting.js';
import { ROOT_ONLY_FUNCTION, rootOnly } from './paths.js';
import { ensureFile, heredoc, script, sh } from './sh.js';

export interface BackupOptions {
  app: string;
  database: string;
  backupDir: string;
  retentionDays: number;
}

export interface BackupInstallOptions extends BackupOptions {
  /** systemd OnCalendar expression; default `daily`. */
  onCalendar?: string;
}

/** What a manifest holds (see backupProgram). */
export interface BackupManifest {
  database: string;
  created: string;
  label: string;
  file: string;
  size: number;
  sha256: string;
  pg_version: string;
  tables: Record<string, number>;
}

export const DEFAULT_BACKUP_LABEL = 'manual';
export const DEFAULT_RETENTION_DAYS = 30;

export function defaultBackupDir(app: string): string {
  return `/var/backups/metalship/${app}`;
}

export function backupProgramPath(app: string): string {
  return `/usr/local/sbin/metalship-backup-${app}`;
}

export function backupUnitNames(app: string): { service: string; timer: string } {
  return { service: `metalship-backup-${app}.service`, timer: `metalship-backup-${app}.timer` };
}

/** The file with the record of the last successful restore test, beside the backups. */
export function lastVerifiedPath(backupDir: string): string {
  return `${backupDir}/.last-verified.json`;
}

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$/;
const LABEL_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/;
const APP_RE = /^[a-z][a-z0-9_-]{0,31}$/;

/** Backup file names: <database>_<UTC stamp>_<label>.dump (the label may hold '_'). */
export const BACKUP_NAME_RE =
  /^([A-Za-z0-9_][A-Za-z0-9_-]{0,62})_(\d{8}T\d{6}Z)_([A-Za-z0-9][A-Za-z0-9._-]{0,79})\.dump$/;

export function validDatabaseName(name: string): string | null {
  return NAME_RE.test(name) ? null : 'letters, digits, _ and - only (1 to 63, not starting with -)';
}

export function validBackupLabel(label: string): string | null {
  return LABEL_RE.test(label)
    ? null
    : 'letters, digits, ., _ and - only (1 to 80, starting with a letter or digit)';
}

function check(opts: BackupOptions): void {
  if (!APP_RE.test(opts.app))
    throw new Error(`backup: app ${JSON.stringify(opts.app)} is not a valid app name`);
  const db = validDatabaseName(opts.database);
  if (db) throw new Error(`backup: database ${JSON.stringify(opts.database)}: ${db}`);
  if (
    !/^\/[^\0\n]*$/.test(opts.backupDir) ||
    opts.backupDir === '/' ||
    /(^|\/)\.\.?(\/|$)/.test(opts.backupDir)
  )
    throw new Error(
      `backup: backup directory ${JSON.stringify(opts.backupDir)} must be an absolute path, not /`,
    );
  if (!Number.isInteger(opts.retentionDays) || opts.retentionDays < 1 || opts.retentionDays > 3650)
    throw new Error(`backup: retention ${opts.retentionDays} must be a whole number of days from 1 to 3650`);
}

/**
 * SQL that prints one JSON object line {"schema.table": rows, ...} for every
 * table whose data pg_dump dumps (ordinary tables and partitions, not the
 * catalogs or extension members). Used at backup time, inside the snapshot, and
 * after a restore, so both sides count the same way.
 */
export const ROW_COUNTS_SQL =
  `SELECT coalesce(json_object_agg(t.name, t.n ORDER BY t.name), '{}')::text FROM (` +
  `SELECT n.nspname || '.' || c.relname AS name, ` +
  `(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint AS n ` +
  `FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace ` +
  `WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ` +
  `AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')` +
  `) t;`;

/**
 * The backup program (/usr/local/sbin/metalship-backup-{app}). Usage:
 * `metalship-backup-{app} [label]`; prints the dump's path on its last line.
 */
export function backupProgram(opts: BackupOptions): string {
  check(opts);
  return script(
    '#!/bin/bash',
    sh`# metalship-backup-${opts.app}: PostgreSQL backup of ${opts.database}. Managed by metalship; changes are overwritten.`,
    '# Usage: metalship-backup-APP [label]   (label: daily, manual, pre-migrate-<release>, ...)',
    'set -euo pipefail',
    'umask 077',
    sh`DB=${opts.database}`,
    sh`DIR=${opts.backupDir}`,
    sh`RETENTION_DAYS=${opts.retentionDays}`,
    sh`LABEL=\${1:-${DEFAULT_BACKUP_LABEL}}`,
    'say() { printf "metalship-backup: %s\\n" "$*" >&2; }',
    'die() { say "error: $*"; exit 1; }',
    `[[ $LABEL =~ ${LABEL_RE.source} ]] || die "label '$LABEL' is invalid: letters, digits, ., _ and - only (1 to 80, starting with a letter or digit)"`,
    '[ "$(id -u)" = 0 ] || die "must run as root (it runs pg_dump as the postgres user and owns the backup directory)"',
    'for tool in pg_dump pg_dumpall psql sha256sum runuser flock; do command -v "$tool" >/dev/null || die "$tool is not installed"; done',
    'cd /',
    // Root writes the backups there: no other user may be able to swap a directory on the way.
    ROOT_ONLY_FUNCTION,
    'ms_root_only "$DIR" || die "the backup directory is not safe for root to write to"',
    'mkdir -p -- "$DIR"',
    'chown root:root -- "$DIR"',
    'chmod 700 -- "$DIR"',
    // One backup of this database at a time; a second waits.
    'exec 8>>"$DIR/.backup.lock"',
    'flock 8',
    'now=$(date -u +%s)',
    'stamp=$(date -u -d "@$now" +%Y%m%dT%H%M%SZ)',
    'while [ -e "$DIR/${DB}_${stamp}_${LABEL}.dump" ] || [ -e "$DIR/${DB}_${stamp}_${LABEL}.manifest.json" ]; do',
    '  sleep 1; now=$(date -u +%s); stamp=$(date -u -d "@$now" +%Y%m%dT%H%M%SZ)',
    'done',
    'created=$(date -u -d "@$now" +%Y-%m-%dT%H:%M:%SZ)',
    'base="${DB}_${stamp}_${LABEL}"',
    'dump="$DIR/$base.dump"',
    'manifest="$DIR/$base.manifest.json"',
    'globals="$DIR/$base.globals.sql"',
    'tmp_dump="$DIR/.$base.dump.partial"',
    'tmp_manifest="$DIR/.$base.manifest.partial"',
    'tmp_globals="$DIR/.$base.globals.partial"',
    'psql_err=$(mktemp)',
    'psql_pid=""',
    'cleanup() {',
    '  rm -f -- "$tmp_dump" "$tmp_manifest" "$tmp_globals" "$psql_err"',
    '  if [ -n "$psql_pid" ]; then kill "$psql_pid" 2>/dev/null || true; fi',
    '}',
    'trap cleanup EXIT',
    'start=$(date +%s)',
    // The snapshot: a REPEATABLE READ transaction held open by a psql coprocess.
    // Its first query exports the snapshot; the row counts and pg_dump read that same snapshot.
    'coproc PSQL { exec runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" 2>"$psql_err"; }',
    'psql_pid=$PSQL_PID',
    'exec 5<&"${PSQL[0]}" 6>&"${PSQL[1]}"',
    "printf '%s\\n' 'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;' 'SELECT pg_export_snapshot();' >&6",
    'snap=""',
    'IFS= read -r snap <&5 || true',
    '[[ $snap =~ ^[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?$ ]] || die "cannot open a snapshot of database $DB: $(head -c 2000 "$psql_err")"',
    "printf '%s\\n' \"SELECT to_json(current_setting('server_version'))::text;\" >&6",
    'pg_version=""',
    'IFS= read -r pg_version <&5 || die "cannot read the server version: $(head -c 2000 "$psql_err")"',
    heredocVar('counts_sql', ROW_COUNTS_SQL),
    'printf \'%s\\n\' "$counts_sql" >&6',
    'tables=""',
    'IFS= read -r tables <&5 || die "cannot count the rows of $DB: $(head -c 2000 "$psql_err")"',
    '[[ $tables == "{"* ]] || die "unexpected row counts from $DB: $tables $(head -c 2000 "$psql_err")"',
    'if ! runuser -u postgres -- pg_dump -Fc --snapshot="$snap" -d "$DB" > "$tmp_dump"; then die "pg_dump of $DB failed"; fi',
    "printf '%s\\n' 'COMMIT;' '\\q' >&6",
    'exec 6>&- 5<&-',
    'wait "$psql_pid" || die "the snapshot transaction failed: $(head -c 2000 "$psql_err")"',
    'psql_pid=""',
    // Globals (roles, tablespaces) are cluster-wide and small: beside every dump.
    'if runuser -u postgres -- pg_dumpall --globals-only > "$tmp_globals"; then',
    '  sync -- "$tmp_globals" 2>/dev/null || true',
    '  mv -f -- "$tmp_globals" "$globals"',
    'else',
    '  say "warning: pg_dumpall --globals-only failed; the dump is still complete"',
    'fi',
    'size=$(stat -c %s -- "$tmp_dump")',
    '[ "$size" -gt 0 ] || die "pg_dump wrote nothing"',
    'sha=$(sha256sum -- "$tmp_dump" | cut -d" " -f1)',
    'sync -- "$tmp_dump" 2>/dev/null || true',
    'mv -f -- "$tmp_dump" "$dump"',
    'printf \'{"database": "%s", "created": "%s", "label": "%s", "file": "%s", "size": %s, "sha256": "%s", "pg_version": %s, "tables": %s}\\n\' \\',
    '  "$DB" "$created" "$LABEL" "$base.dump" "$size" "$sha" "$pg_version" "$tables" > "$tmp_manifest"',
    'sync -- "$tmp_manifest" 2>/dev/null || true',
    'mv -f -- "$tmp_manifest" "$manifest"',
    'sync -- "$DIR" 2>/dev/null || true',
    'say "$base.dump: $size bytes, $(( $(date +%s) - start )) s"',
    // Retention: backups of this database older than the limit. The new one is never older.
    'pattern="${DB}_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z_*"',
    'find "$DIR" -maxdepth 1 -type f \\( -name "$pattern.dump" -o -name "$pattern.manifest.json" -o -name "$pattern.globals.sql" \\) \\',
    '  -mmin "+$(( RETENTION_DAYS * 1440 ))" -print -delete | sed "s|^|metalship-backup: removed old |" >&2',
    'find "$DIR" -maxdepth 1 -type f -name ".${DB}_*.partial" -mmin +1440 -delete',
    'printf \'%s\\n\' "$dump"',
  );
}

/** `name=<exact text>` as a bash assignment, via a quoted heredoc (no expansion). */
function heredocVar(name: string, text: string): string {
  const doc = heredoc(text);
  return `${name}=$(cat ${doc.open}\n${doc.body}\n)`;
}

/** The backup's oneshot service and its timer. */
export function unitFiles(opts: BackupInstallOptions): { service: string; timer: string } {
  const onCalendar = opts.onCalendar ?? 'daily';
  if (!/^[A-Za-z0-9 *:,./~+-]{1,100}$/.test(onCalendar))
    throw new Error(
      `backup: OnCalendar ${JSON.stringify(onCalendar)} has characters a calendar spec cannot have`,
    );
  const prog = backupProgramPath(opts.app);
  const service = [
    '# Managed by metalship.',
    '[Unit]',
    `Description=${unitText(`metalship: PostgreSQL backup of ${opts.database} (${opts.app})`)}`,
    'After=postgresql.service',
    'Wants=postgresql.service',
    '',
    '[Service]',
    'Type=oneshot',
    `ExecStart=${execLine([prog, 'daily'])}`,
    'Nice=10',
    'IOSchedulingClass=best-effort',
    'IOSchedulingPriority=7',
    'PrivateTmp=true',
    'ProtectHome=true',
    'ProtectSystem=full',
    'TimeoutStartSec=6h',
    '',
  ].join('\n');
  const timer = [
    '# Managed by metalship.',
    '[Unit]',
    `Description=${unitText(`metalship: daily PostgreSQL backup of ${opts.database} (${opts.app})`)}`,
    '',
    '[Timer]',
    `OnCalendar=${unitText(onCalendar)}`,
    'RandomizedDelaySec=30min',
    'Persistent=true',
    '',
    '[Install]',
    'WantedBy=timers.target',
    '',
  ].join('\n');
  return { service, timer };
}

/**
 * Installs the backup program, its oneshot service and timer (idempotent). Prints
 * `changed <what>` for each thing it changed, nothing when all was in place.
 */
export function backupInstallScript(opts: BackupInstallOptions): string {
  const program = backupProgram(opts);
  const names = backupUnitNames(opts.app);
  const units = unitFiles(opts);
  const unitDir = '/etc/systemd/system';
  return script(
    'reload=""',
    rootOnly(opts.backupDir),
    sh`if [ ! -d ${opts.backupDir} ]; then mkdir -p -- ${opts.backupDir}; chmod 700 -- ${opts.backupDir}; echo ${'changed ' + opts.backupDir}; fi`,
    sh`if [ "$(stat -c %a:%U -- ${opts.backupDir})" != 700:root ]; then chown -h root:root -- ${opts.backupDir}; chmod 700 -- ${opts.backupDir}; echo ${'changed ' + opts.backupDir + ' mode'}; fi`,
    ensureFile(backupProgramPath(opts.app), program, {
      mode: '755',
      owner: 'root:root',
      label: backupProgramPath(opts.app),
    }),
    ensureFile(`${unitDir}/${names.service}`, units.service, {
      mode: '644',
      label: names.service,
      onChange: 'reload=1',
    }),
    ensureFile(`${unitDir}/${names.timer}`, units.timer, {
      mode: '644',
      label: names.timer,
      onChange: 'reload=1',
    }),
    'if [ -n "$reload" ]; then systemctl daemon-reload; fi',
    sh`if ! systemctl is-enabled --quiet ${names.timer}; then systemctl enable --quiet ${names.timer}; echo ${'changed ' + names.timer + ' enabled'}; fi`,
    sh`if ! systemctl is-active --quiet ${names.timer}; then systemctl start ${names.timer}; echo ${'changed ' + names.timer + ' started'};`,
    sh`elif [ -n "$reload" ]; then systemctl restart ${names.timer}; fi`,
  );
}

/**
 * Takes a backup now with the given label: the installed program, or this
 * program run inline when it is not installed. The dump's path is the last line.
 */
export function backupNowScript(opts: BackupOptions, label: string): string {
  const bad = validBackupLabel(label);
  if (bad) throw new Error(`backup: label ${JSON.stringify(label)}: ${bad}`);
  const program = backupProgram(opts);
  const doc = heredoc(program);
  const prog = backupProgramPath(opts.app);
  return script(
    sh`if [ -x ${prog} ]; then`,
    sh`  ${prog} ${label}`,
    'else',
    '  inline=$(mktemp)',
    '  trap \'rm -f -- "$inline"\' EXIT',
    `  cat > "$inline" ${doc.open}`,
    doc.body,
    sh`  bash "$inline" ${label}`,
    'fi',
  );
}

/** The dump path a backup run printed (its last line). */
export function parseBackupPath(stdout: string): string {
  const lines = stdout.trim().split('\n');
  return (lines[lines.length - 1] ?? '').trim();
}

/**
 * For other actions (deploy), on the database host: prints `LAST_VERIFIED <json>`
 * with the record of the last successful restore test, and `NOW <epoch>`.
 */
export function lastVerifiedScript(backupDir: string): string {
  return script(
    sh`f=${lastVerifiedPath(backupDir)}`,
    'if [ -f "$f" ]; then echo "LAST_VERIFIED $(head -c 10000 -- "$f" | tr -d \'\\n\')"; fi',
    'echo "NOW $(date -u +%s)"',
  );
}

/**
 * A warning for the deploy log when the backups were never proven to restore, or
 * not for longer than maxDays (the monthly restore test stopped?); null when fine.
 */
export function verificationWarning(stdout: string, maxDays = 45): string | null {
  const get = (k: string) =>
    stdout
      .split('\n')
      .find((l) => l.startsWith(k + ' '))
      ?.slice(k.length + 1);
  const now = Number(get('NOW'));
  const raw = get('LAST_VERIFIED');
  if (!raw) return 'no restore test of the backups is recorded on this host: run the backup-verify action';
  let when = NaN;
  try {
    when = Date.parse((JSON.parse(raw) as { verified?: string }).verified ?? '') / 1000;
  } catch {
    // unreadable record: treated as missing
  }
  if (Number.isNaN(when))
    return 'the record of the last restore test is unreadable: run the backup-verify action';
  const days = (now - when) / 86400;
  return days > maxDays
    ? `the backups were last proven to restore ${days.toFixed(0)} days ago: is the monthly restore test still running?`
    : null;
}
