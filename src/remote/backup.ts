// PostgreSQL backups: the backup program installed on a database host (its
// settings, then src/remote/sh/backup.sh), its daily timer, and the steps that
// take a backup now and read the last restore test. Pure functions from
// settings to bash.
//
// One backup is three files in the backup directory (700, root):
//   <database>_<YYYYmmddTHHMMSSZ>_<label>.dump            pg_dump -Fc
//   <database>_<YYYYmmddTHHMMSSZ>_<label>.globals.sql     pg_dumpall --globals-only
//   <database>_<YYYYmmddTHHMMSSZ>_<label>.manifest.json   written last, atomically
// The manifest's row counts are taken in the same snapshot as the dump, so a
// restore must reproduce them exactly.

import { readFileSync } from 'node:fs';
import { execLine, unitText } from './quoting.js';
import { pushProgramPath } from './offsite.js';
import { ROOT_ONLY_FUNCTION, rootOnly } from './paths.js';
import { assignments, ensureFile, heredoc, keyLines, script, sh, shellFile, textVar } from './sh.js';
import { step, type Step } from './step.js';

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

const BACKUP_SH = shellFile(readFileSync(new URL('./sh/backup.sh', import.meta.url), 'utf8'));

/**
 * The backup program (/usr/local/sbin/metalship-backup-{app}): its settings as
 * quoted assignments, then src/remote/sh/backup.sh. Usage:
 * `metalship-backup-{app} [label]`; prints the dump's path on its last line.
 */
export function backupProgram(opts: BackupOptions): string {
  check(opts);
  return script(
    '#!/bin/bash',
    sh`# metalship-backup-${opts.app}: PostgreSQL backup of ${opts.database}. Managed by metalship; changes are overwritten.`,
    '# Usage: metalship-backup-APP [label]   (label: daily, manual, pre-migrate-<release>, ...)',
    assignments({
      DB: opts.database,
      DIR: opts.backupDir,
      RETENTION_DAYS: opts.retentionDays,
      DEFAULT_LABEL: DEFAULT_BACKUP_LABEL,
      LABEL_PATTERN: LABEL_RE.source,
      PUSH: pushProgramPath(opts.app),
    }),
    textVar('COUNTS_SQL', ROW_COUNTS_SQL),
    ROOT_ONLY_FUNCTION,
    BACKUP_SH,
  );
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
 * program run inline when it is not installed. Gives the dump's path.
 */
export function backupNowStep(opts: BackupOptions, label: string): Step<string> {
  const bad = validBackupLabel(label);
  if (bad) throw new Error(`backup: label ${JSON.stringify(label)}: ${bad}`);
  const doc = heredoc(backupProgram(opts));
  const prog = backupProgramPath(opts.app);
  return step(
    `taking a backup of ${opts.database} (${label})`,
    script(
      sh`if [ -x ${prog} ]; then`,
      sh`  dump=$(${prog} ${label})`,
      'else',
      '  inline=$(mktemp)',
      '  trap \'rm -f -- "$inline"\' EXIT',
      `  cat > "$inline" ${doc.open}`,
      doc.body,
      sh`  dump=$(bash "$inline" ${label})`,
      'fi',
      // The program prints the path on its last line.
      'echo "DUMP $(printf \'%s\\n\' "$dump" | tail -n 1)"',
    ),
    (stdout) => {
      const dump = keyLines(stdout).get('DUMP');
      if (!dump) throw new Error('the backup printed no dump path');
      return dump;
    },
  );
}

/**
 * For other actions (deploy), on the database host: a warning for the log when
 * the backups were never proven to restore, or not for longer than maxDays (the
 * monthly restore test stopped?); null when fine or when the host keeps no
 * backups in backupDir.
 */
export function restoreProofStep(backupDir: string, maxDays = 45): Step<string | null> {
  return step(
    'reading the last restore test',
    script(
      sh`if [ ! -d ${backupDir} ]; then echo NO_BACKUPS; exit 0; fi`,
      sh`record=${lastVerifiedPath(backupDir)}`,
      'if [ -f "$record" ]; then echo "LAST_VERIFIED $(head -c 10000 -- "$record" | tr -d \'\\n\')"; fi',
      'echo "NOW $(date -u +%s)"',
    ),
    (stdout) => {
      const out = keyLines(stdout);
      if (out.get('NO_BACKUPS') !== undefined) return null;
      const now = Number(out.get('NOW'));
      const record = out.get('LAST_VERIFIED');
      if (!record)
        return 'no restore test of the backups is recorded on this host: run the backup-verify action';
      let when = NaN;
      try {
        when = Date.parse((JSON.parse(record) as { verified?: string }).verified ?? '') / 1000;
      } catch {
        // unreadable record: treated as missing
      }
      if (Number.isNaN(when))
        return 'the record of the last restore test is unreadable: run the backup-verify action';
      const days = (now - when) / 86400;
      return days > maxDays
        ? `the backups were last proven to restore ${days.toFixed(0)} days ago: is the monthly restore test still running?`
        : null;
    },
  );
}
