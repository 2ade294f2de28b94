// Restore tests: find the newest backup and its manifest, restore it into a
// scratch database, inspect it (row counts, amcheck, checks), start the current
// release against it, and drop everything again. Pure functions from settings to
// bash, plus the comparisons run on what the scripts print.

import { BACKUP_NAME_RE, ROW_COUNTS_SQL, lastVerifiedPath, type BackupManifest } from './backup.js';
import { rootOnly } from './paths.js';
import { PROBE_USER, pyToolDefinition } from './pytool.js';
import { heredoc, script, sh, writeFileAtomic } from './sh.js';

/** Written as the scratch database's comment: only a database carrying it is ours to drop. */
export const SCRATCH_MARKER = 'metalship backup-verify scratch database';

const PSQL = 'runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1';

function textVar(name: string, text: string): string {
  const doc = heredoc(text);
  return `${name}=$(cat ${doc.open}\n${doc.body}\n)`;
}

/**
 * On the backup host: the chosen backup's manifest (the newest of the database in
 * the directory, or the given dump file's), the host's clock and the record of
 * the last successful verification. Prints `KEY value` lines.
 */
export function findBackupScript(o: { backupDir: string; database: string; file: string }): string {
  return script(
    'cd /',
    // A backup another user could have swapped proves nothing.
    rootOnly(o.file ? o.file.replace(/\/[^/]*$/, '') || '/' : o.backupDir),
    o.file
      ? sh`dump=${o.file}`
      : script(
          sh`dir=${o.backupDir}`,
          sh`db=${o.database}`,
          'if [ ! -d "$dir" ]; then echo "the backup directory $dir does not exist on this host" >&2; exit 3; fi',
          // Names carry the UTC stamp after the database: the newest is the largest stamp.
          `dump=$(find "$dir" -maxdepth 1 -type f -name "$db"'_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z_*.dump' -printf '%f\\n' | awk -v db="$db" '{ s = substr($0, length(db) + 2, 16); print s "\\t" $0 }' | sort | tail -n 1 | cut -f2-)`,
          'if [ -z "$dump" ]; then echo "no backup of database $db in $dir" >&2; exit 3; fi',
          'dump="$dir/$dump"',
        ).trimEnd(),
    'if [ ! -f "$dump" ]; then echo "the backup file $dump does not exist" >&2; exit 3; fi',
    'manifest="${dump%.dump}.manifest.json"',
    'if [ ! -f "$manifest" ]; then echo "the backup $dump has no manifest ($manifest): it is incomplete or was not made by metalship" >&2; exit 3; fi',
    'echo "DUMP $dump"',
    'echo "SIZE $(stat -c %s -- "$dump")"',
    'echo "NOW $(date -u +%s)"',
    'echo "MANIFEST $(head -c 10000000 -- "$manifest" | tr -d \'\\n\')"',
    sh`last=${lastVerifiedPath(o.backupDir)}`,
    'if [ -f "$last" ]; then echo "LAST $(head -c 10000 -- "$last" | tr -d \'\\n\')"; fi',
  );
}

export interface FoundBackup {
  dump: string;
  size: number;
  now: number;
  manifest: BackupManifest;
  lastVerified: LastVerified | null;
}

export interface LastVerified {
  verified: string;
  backup: string;
  created: string;
  restoreSeconds: number;
  run: string;
}

export function parseFound(stdout: string): FoundBackup | { error: string } {
  const get = (k: string) =>
    stdout
      .split('\n')
      .find((l) => l.startsWith(k + ' '))
      ?.slice(k.length + 1) ?? '';
  const dump = get('DUMP');
  let manifest: BackupManifest;
  try {
    manifest = JSON.parse(get('MANIFEST')) as BackupManifest;
  } catch {
    return { error: `the manifest of ${dump} is not valid JSON` };
  }
  const problems: string[] = [];
  if (typeof manifest.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(manifest.sha256)) problems.push('sha256');
  if (typeof manifest.size !== 'number') problems.push('size');
  if (typeof manifest.created !== 'string' || Number.isNaN(Date.parse(manifest.created)))
    problems.push('created');
  if (!manifest.tables || typeof manifest.tables !== 'object') problems.push('tables');
  if (problems.length) return { error: `the manifest of ${dump} lacks a valid ${problems.join(', ')}` };
  let lastVerified: LastVerified | null = null;
  try {
    lastVerified = get('LAST') ? (JSON.parse(get('LAST')) as LastVerified) : null;
  } catch {
    lastVerified = null;
  }
  return { dump, size: Number(get('SIZE')), now: Number(get('NOW')), manifest, lastVerified };
}

/** Whether a dump's file name is one of ours (for a backup-file input). */
export function isBackupName(path: string): boolean {
  return BACKUP_NAME_RE.test(path.split('/').pop() ?? '');
}

/** On the backup host: sends the dump's bytes on stdout, nothing else. */
export function sendDumpScript(dump: string): string {
  return script(sh`exec cat -- ${dump}`);
}

export interface ScratchOptions {
  scratch: string;
  database: string;
}

/**
 * The role that owns the scratch database and everything restored into it. The
 * backup's objects (index expressions, triggers, policies) are the app's code:
 * they run as this unprivileged login role, never as a superuser (a session
 * that merely SET ROLEs could RESET back).
 */
export interface ScratchRole {
  role: string;
  /** A fresh random password (hex), never printed. */
  password: string;
}

/** Script lines defining `as_role CMD...`: a libpq client as the scratch role over 127.0.0.1, its password in the environment. */
function asScratchRole(o: ScratchRole): string {
  return script(
    textVar('password', o.password),
    sh`role=${o.role}`,
    `port=$(${PSQL} -d postgres -c 'SHOW port')`,
    'as_role() { PGPASSWORD="$password" PGHOST=127.0.0.1 PGPORT="$port" PGUSER="$role" PGCONNECT_TIMEOUT=10 "$@"; }',
  ).trimEnd();
}

const PSQL_AS_ROLE = 'as_role psql -X -q -A -t -v ON_ERROR_STOP=1';

function refuseProduction(o: ScratchOptions): void {
  if (o.scratch === o.database)
    throw new Error(`the scratch database cannot be the production database (${o.database})`);
}

/**
 * On the restore host, before anything is copied: the tools are there, and the
 * scratch name is free or a leftover of ours (dropped then). A database of that
 * name that is not ours is refused.
 */
export function prepareScratchScript(o: ScratchOptions): string {
  refuseProduction(o);
  return script(
    'cd /',
    'for tool in pg_restore psql sha256sum runuser; do command -v "$tool" >/dev/null || { echo "$tool is not installed on this host" >&2; exit 1; }; done',
    sh`scratch=${o.scratch}`,
    sh`marker=${SCRATCH_MARKER}`,
    `existing=$(${PSQL} -d postgres -v name="$scratch" <<'SQL'`,
    "SELECT coalesce(shobj_description(oid, 'pg_database'), '') || '|' FROM pg_database WHERE datname = :'name';",
    'SQL',
    ')',
    'if [ -n "$existing" ]; then',
    '  if [ "$existing" != "$marker|" ]; then echo "a database named $scratch exists and is not a scratch database of metalship: refusing to touch it (choose another scratch-database)" >&2; exit 5; fi',
    `  ${PSQL} -d postgres -v name="$scratch" <<'SQL'`,
    'DROP DATABASE :"name" WITH (FORCE);',
    'SQL',
    '  echo "DROPPED_LEFTOVER $scratch"',
    'fi',
    // Scratch roles a killed run left (marked as ours, owning nothing now).
    `${PSQL} -d postgres -v marker="$marker" <<'SQL'`,
    "SELECT format('DROP ROLE %I', rolname) FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = :'marker' \\gexec",
    'SQL',
    `echo "FREE $(${PSQL} -d postgres -c 'SHOW server_version')"`,
  );
}

/**
 * On the restore host: checks the dump (received on stdin after the script when
 * `receive`, or read in place) against the manifest's size and sha256, creates
 * the scratch role and database (both marked as ours; the database empty and
 * the role's), the dump's extensions and amcheck while it is still empty, then
 * restores the rest with --exit-on-error as the scratch role.
 * Prints `RECEIVED <bytes>`, `CHECKSUM ok`, `CREATED` and `RESTORED <seconds>`.
 */
export function restoreScript(
  o: ScratchOptions & ScratchRole & { receive: boolean; dump: string; size: number; sha256: string },
): string {
  refuseProduction(o);
  return script(
    'cd /',
    // First read everything that was sent, so the sender never blocks on a script that stopped early.
    'work=$(mktemp -d /var/tmp/metalship-verify.XXXXXX)',
    'trap \'rm -rf -- "$work"\' EXIT',
    o.receive
      ? script(
          // The dump follows the script on stdin, streamed from the backup host through the runner.
          'cat > "$work/backup.dump"',
          'dump="$work/backup.dump"',
          'echo "RECEIVED $(stat -c %s -- "$dump")"',
        ).trimEnd()
      : sh`dump=${o.dump}`,
    sh`scratch=${o.scratch}`,
    sh`marker=${SCRATCH_MARKER}`,
    sh`want_size=${o.size}`,
    sh`want_sha=${o.sha256}`,
    'size=$(stat -c %s -- "$dump")',
    'if [ "$size" != "$want_size" ]; then echo "the dump is $size bytes but its manifest says $want_size: it is truncated or was changed after the backup" >&2; exit 4; fi',
    'sha=$(sha256sum -- "$dump" | cut -d" " -f1)',
    'if [ "$sha" != "$want_sha" ]; then echo "the dump\'s sha256 $sha does not match its manifest\'s $want_sha: it was changed or damaged after the backup" >&2; exit 4; fi',
    'echo "CHECKSUM ok"',
    asScratchRole(o),
    // The role and its database. CREATE DATABASE fails if the name was taken
    // since the preparation: never someone else's. The password goes on stdin.
    `{ printf '\\set password %s\\n' "$password"; cat <<'SQL'`,
    'CREATE ROLE :"role" LOGIN PASSWORD :\'password\' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;',
    'COMMENT ON ROLE :"role" IS :\'marker\';',
    'CREATE DATABASE :"name" OWNER :"role" TEMPLATE template0;',
    'COMMENT ON DATABASE :"name" IS :\'marker\';',
    'SQL',
    `} | ${PSQL} -d postgres -v role="$role" -v name="$scratch" -v marker="$marker"`,
    'echo "CREATED $scratch"',
    // Extensions need a superuser: made now, from the server's own files, in the
    // empty database (the dump's names and schemas only, quoted by psql); then
    // amcheck for the checks, its function granted to the role.
    'pg_restore -l -- "$dump" > "$work/all.list"',
    `grep -E '^[0-9]+; [0-9]+ [0-9]+ EXTENSION - ' "$work/all.list" > "$work/ext.list" || true`,
    `grep -vE '^[0-9]+; [0-9]+ [0-9]+ (EXTENSION|COMMENT - EXTENSION) ' "$work/all.list" > "$work/rest.list" || true`,
    'if [ -s "$work/ext.list" ]; then',
    '  pg_restore -f - -L "$work/ext.list" -- "$dump" | sed -n \'s/^CREATE EXTENSION IF NOT EXISTS \\(.*\\) WITH SCHEMA \\(.*\\);$/\\1 \\2/p\' > "$work/ext.names"',
    '  while read -r ext schema; do',
    '    ext=${ext#\\"}; ext=${ext%\\"}; schema=${schema#\\"}; schema=${schema%\\"}',
    `    ${PSQL} -d "$scratch" -v ext="$ext" -v schema="$schema" -v role="$role" <<'SQL'`,
    'CREATE SCHEMA IF NOT EXISTS :"schema" AUTHORIZATION :"role";',
    'CREATE EXTENSION IF NOT EXISTS :"ext" WITH SCHEMA :"schema";',
    'SQL',
    '  done < "$work/ext.names"',
    'fi',
    `if ${PSQL} -d "$scratch" -v role="$role" >/dev/null 2>"$work/amcheck.err" <<'SQL'`,
    'CREATE EXTENSION IF NOT EXISTS amcheck;',
    'GRANT EXECUTE ON FUNCTION bt_index_check(regclass, boolean) TO :"role";',
    'SQL',
    'then :; else echo "AMCHECK_UNAVAILABLE $(head -c 500 "$work/amcheck.err" | tr \'\\n\' \' \')"; fi',
    'start=$(date +%s.%N)',
    // Owners and grants name roles the restore host may not have: everything becomes the scratch role's.
    'if ! as_role pg_restore --exit-on-error --no-owner --no-privileges -L "$work/rest.list" -d "$scratch" -- "$dump" 2> "$work/restore.err"; then',
    '  echo "pg_restore failed: $(head -c 3000 "$work/restore.err")" >&2',
    '  exit 6',
    'fi',
    'end=$(date +%s.%N)',
    'echo "RESTORED $(awk -v a="$start" -v b="$end" \'BEGIN { printf "%.2f", b - a }\')"',
  );
}

/**
 * On the restore host, in the scratch database, as the scratch role: row counts
 * (JSON), amcheck of every btree index (with heapallindexed: it evaluates index
 * expressions, the app's code), and each check query. Prints `COUNTS <json>`,
 * `AMCHECK <n>` or `AMCHECK_FAILED <text>` (or nothing when the restore said
 * `AMCHECK_UNAVAILABLE`), `CHECK <i> <t|f|error: ...>`.
 */
export function inspectScript(o: ScratchOptions & ScratchRole & { checks: string[] }): string {
  refuseProduction(o);
  return script(
    'cd /',
    sh`scratch=${o.scratch}`,
    asScratchRole(o),
    textVar('counts_sql', ROW_COUNTS_SQL),
    `echo "COUNTS $(${PSQL_AS_ROLE} -d "$scratch" -c "$counts_sql")"`,
    'err=$(mktemp)',
    'trap \'rm -f -- "$err"\' EXIT',
    `if [ "$(${PSQL_AS_ROLE} -d "$scratch" -c "SELECT count(*) FROM pg_proc WHERE proname = 'bt_index_check'")" != 0 ]; then`,
    textVar(
      'amcheck_sql',
      "SELECT c.oid::regclass::text, bt_index_check(c.oid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%';",
    ),
    `  if out=$(${PSQL_AS_ROLE} -d "$scratch" -c "$amcheck_sql" 2>"$err"); then echo "AMCHECK $(printf '%s\\n' "$out" | grep -c . || true)"; else echo "AMCHECK_FAILED $(head -c 2000 "$err" | tr '\\n' ' ')"; fi`,
    'fi',
    ...o.checks.map((q, i) =>
      script(
        textVar('q', q),
        `if out=$(${PSQL_AS_ROLE} -d "$scratch" -c "$q" 2>"$err"); then echo "CHECK ${i} $(printf '%s' "$out" | tr '\\n' ' ')"; else echo "CHECK ${i} error: $(head -c 500 "$err" | tr '\\n' ' ')"; fi`,
      ).trimEnd(),
    ),
  );
}

export interface SmokeOptions extends ScratchOptions, ScratchRole {
  app: string;
  appRoot: string;
  appUser: string;
  appModule: string;
  path: string;
  timeout: number;
}

/**
 * On the restore host: starts the current release's uvicorn on a private Unix
 * socket with only DATABASE_URL set (pointing at the scratch database through a
 * temporary login role), waits for smoke-path to answer 200, and stops it.
 * Prints `SMOKE skipped <why>` or the wait-ready JSON after `SMOKE `.
 */
export function smokeScript(o: SmokeOptions): string {
  refuseProduction(o);
  return script(
    'cd /',
    sh`current=${o.appRoot}/current`,
    sh`user=${o.appUser}`,
    sh`scratch=${o.scratch}`,
    'if [ ! -d "$current/" ]; then echo "SMOKE skipped: no current release at $current on this host"; exit 0; fi',
    'py="$current/.venv/bin/python"',
    sh`[ -x "$py" ] || py=${o.appRoot}/venv/bin/python`,
    'if [ ! -x "$py" ]; then echo "SMOKE skipped: the current release has no virtualenv"; exit 0; fi',
    'if ! id -u "$user" >/dev/null 2>&1; then echo "SMOKE skipped: the app user $user does not exist on this host"; exit 0; fi',
    pyToolDefinition(),
    // The app connects as the scratch role, which owns everything restored.
    asScratchRole(o),
    // The app's output goes to a file in root's own directory; only the socket's
    // directory is the app's (whatever the app puts there, root never reads it).
    'work=$(mktemp -d /run/metalship-verify-smoke.XXXXXX)',
    'chmod 711 "$work"',
    'mkdir "$work/sock"',
    'chown "$user" "$work/sock"',
    'sock="$work/sock/api.sock"',
    'log="$work/app.log"',
    'pid=""',
    'stop() { if [ -n "$pid" ]; then kill -TERM -- "-$pid" 2>/dev/null || true; for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.5; done; kill -KILL -- "-$pid" 2>/dev/null || true; fi; rm -rf -- "$work"; }',
    'trap stop EXIT',
    'url="postgresql://$role:$password@127.0.0.1:$port/$scratch"',
    // Only DATABASE_URL (and a path, a home, a locale) reaches the app, in its
    // environment: exported in this subshell, never on a command line.
    '(',
    '  cd "$current/"',
    '  for v in $(compgen -e); do unset "$v" 2>/dev/null || true; done',
    '  export PATH="$(dirname "$py"):/usr/sbin:/usr/bin:/sbin:/bin" HOME=/nonexistent LANG=C.UTF-8 DATABASE_URL="$url"',
    sh`  exec setsid runuser -u "$user" -- "$py" -m uvicorn ${o.appModule} --uds "$sock" > "$log" 2>&1`,
    ') &',
    'pid=$!',
    sh`if out=$(mstool_as ${PROBE_USER} wait-ready "$sock" ${o.path} ${o.timeout} 1 200 ''); then echo "SMOKE $out"; else`,
    '  echo "SMOKE $out"',
    '  echo "the current release did not answer on the scratch database; its output:" >&2',
    '  out=$(tail -n 20 -- "$log")',
    '  printf \'%s\\n\' "${out//"$password"/***}" >&2',
    '  exit 7',
    'fi',
  );
}

/** On the restore host, always at the end: drops the scratch database (if ours) and the temporary role. */
export function dropScratchScript(o: ScratchOptions & { role: string }): string {
  refuseProduction(o);
  return script(
    'cd /',
    sh`scratch=${o.scratch}`,
    sh`role=${o.role}`,
    sh`marker=${SCRATCH_MARKER}`,
    `existing=$(${PSQL} -d postgres -v name="$scratch" <<'SQL'`,
    "SELECT coalesce(shobj_description(oid, 'pg_database'), '') || '|' FROM pg_database WHERE datname = :'name';",
    'SQL',
    ')',
    'if [ "$existing" = "$marker|" ]; then',
    `  ${PSQL} -d postgres -v name="$scratch" <<'SQL'`,
    'DROP DATABASE :"name" WITH (FORCE);',
    'SQL',
    '  echo "DROPPED $scratch"',
    'elif [ -n "$existing" ]; then echo "not dropping $scratch: it is not a scratch database of metalship" >&2; fi',
    `${PSQL} -d postgres -v role="$role" <<'SQL'`,
    "SELECT format('DROP ROLE %I', rolname) FROM pg_roles WHERE rolname = :'role' \\gexec",
    'SQL',
    // Leftovers of a killed run: root's own only (/var/tmp is everyone's).
    "find /var/tmp /run -maxdepth 1 -name 'metalship-verify*' -user root -exec rm -rf -- {} + 2>/dev/null || true",
    `left=$(${PSQL} -d postgres -v name="$scratch" -v role="$role" <<'SQL'`,
    "SELECT (SELECT count(*) FROM pg_database WHERE datname = :'name') + (SELECT count(*) FROM pg_roles WHERE rolname = :'role');",
    'SQL',
    ')',
    'echo "LEFT $left"',
  );
}

/** On the backup host, after a successful verification: the record the next run (and deploys) report. */
export function recordVerifiedScript(backupDir: string, record: LastVerified): string {
  return script(
    rootOnly(backupDir),
    writeFileAtomic(lastVerifiedPath(backupDir), JSON.stringify(record), { mode: '600' }),
  );
}

/** Compares row counts: every table of the manifest with the same count, and no table more or less. */
export function compareCounts(
  expected: Record<string, number>,
  actual: Record<string, number>,
): { tables: number; rows: number; mismatches: string[] } {
  const mismatches: string[] = [];
  for (const [t, n] of Object.entries(expected)) {
    if (!(t in actual)) mismatches.push(`${t}: in the manifest (${n} rows) but not restored`);
    else if (Number(actual[t]) !== Number(n))
      mismatches.push(`${t}: ${actual[t]} rows restored, the manifest says ${n}`);
  }
  for (const t of Object.keys(actual))
    if (!(t in expected)) mismatches.push(`${t}: restored but not in the manifest`);
  const rows = Object.values(actual).reduce((a, b) => a + Number(b), 0);
  return { tables: Object.keys(actual).length, rows, mismatches };
}

/** `KEY rest` lines of a script's stdout. */
export function lines(stdout: string, key: string): string[] {
  return stdout
    .split('\n')
    .filter((l) => l === key || l.startsWith(key + ' '))
    .map((l) => l.slice(key.length + 1));
}
