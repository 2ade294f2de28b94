#!/bin/bash
# The backup program's body (/usr/local/sbin/metalship-backup-{app}; see
# src/remote/backup.ts, which writes the program: a header, the settings as
# quoted assignments, ms_root_only (src/remote/paths.ts), then this file).
# Settings: DB, DIR, RETENTION_DAYS, DEFAULT_LABEL, LABEL_PATTERN, COUNTS_SQL, PUSH.
# Usage: metalship-backup-APP [label]; prints the dump's path on its last line.
set -euo pipefail
umask 077
LABEL=${1:-$DEFAULT_LABEL}
say() { printf "metalship-backup: %s\n" "$*" >&2; }
die() { say "error: $*"; exit 1; }
[[ $LABEL =~ $LABEL_PATTERN ]] || die "label '$LABEL' is invalid: letters, digits, ., _ and - only (1 to 80, starting with a letter or digit)"
[ "$(id -u)" = 0 ] || die "must run as root (it runs pg_dump as the postgres user and owns the backup directory)"
for tool in pg_dump pg_dumpall psql sha256sum runuser flock; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
cd /
# Root writes the backups there: no other user may be able to swap a directory on the way.
ms_root_only "$DIR" || die "the backup directory is not safe for root to write to"
mkdir -p -- "$DIR"
chown root:root -- "$DIR"
chmod 700 -- "$DIR"
# One backup of this database at a time; a second waits.
exec 8>>"$DIR/.backup.lock"
flock 8
now=$(date -u +%s)
stamp=$(date -u -d "@$now" +%Y%m%dT%H%M%SZ)
while [ -e "$DIR/${DB}_${stamp}_${LABEL}.dump" ] || [ -e "$DIR/${DB}_${stamp}_${LABEL}.manifest.json" ]; do
  sleep 1; now=$(date -u +%s); stamp=$(date -u -d "@$now" +%Y%m%dT%H%M%SZ)
done
created=$(date -u -d "@$now" +%Y-%m-%dT%H:%M:%SZ)
base="${DB}_${stamp}_${LABEL}"
dump="$DIR/$base.dump"
manifest="$DIR/$base.manifest.json"
globals="$DIR/$base.globals.sql"
tmp_dump="$DIR/.$base.dump.partial"
tmp_manifest="$DIR/.$base.manifest.partial"
tmp_globals="$DIR/.$base.globals.partial"
psql_err=$(mktemp)
psql_pid=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  rm -f -- "$tmp_dump" "$tmp_manifest" "$tmp_globals" "$psql_err"
  if [ -n "$psql_pid" ]; then kill "$psql_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
start=$(date +%s)
# The snapshot: a REPEATABLE READ transaction held open by a psql coprocess.
# Its first query exports the snapshot; the row counts and pg_dump read that same snapshot.
coproc PSQL { exec runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" 2>"$psql_err"; }
# shellcheck disable=SC2153  # PSQL_PID is set by coproc PSQL
psql_pid=$PSQL_PID
exec 5<&"${PSQL[0]}" 6>&"${PSQL[1]}"
printf '%s\n' 'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;' 'SELECT pg_export_snapshot();' >&6
snap=""
IFS= read -r snap <&5 || true
[[ $snap =~ ^[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?$ ]] || die "cannot open a snapshot of database $DB: $(head -c 2000 "$psql_err")"
printf '%s\n' "SELECT to_json(current_setting('server_version'))::text;" >&6
pg_version=""
IFS= read -r pg_version <&5 || die "cannot read the server version: $(head -c 2000 "$psql_err")"
printf '%s\n' "$COUNTS_SQL" >&6
tables=""
IFS= read -r tables <&5 || die "cannot count the rows of $DB: $(head -c 2000 "$psql_err")"
[[ $tables == "{"* ]] || die "unexpected row counts from $DB: $tables $(head -c 2000 "$psql_err")"
if ! runuser -u postgres -- pg_dump -Fc --snapshot="$snap" -d "$DB" > "$tmp_dump"; then die "pg_dump of $DB failed"; fi
printf '%s\n' 'COMMIT;' '\q' >&6
exec 6>&- 5<&-
wait "$psql_pid" || die "the snapshot transaction failed: $(head -c 2000 "$psql_err")"
psql_pid=""
# Globals (roles, tablespaces) are cluster-wide and small: beside every dump.
if runuser -u postgres -- pg_dumpall --globals-only > "$tmp_globals"; then
  sync -- "$tmp_globals" 2>/dev/null || true
  mv -f -- "$tmp_globals" "$globals"
else
  say "warning: pg_dumpall --globals-only failed; the dump is still complete"
fi
size=$(stat -c %s -- "$tmp_dump")
[ "$size" -gt 0 ] || die "pg_dump wrote nothing"
sha=$(sha256sum -- "$tmp_dump" | cut -d" " -f1)
sync -- "$tmp_dump" 2>/dev/null || true
mv -f -- "$tmp_dump" "$dump"
printf '{"database": "%s", "created": "%s", "label": "%s", "file": "%s", "size": %s, "sha256": "%s", "pg_version": %s, "tables": %s}\n' \
  "$DB" "$created" "$LABEL" "$base.dump" "$size" "$sha" "$pg_version" "$tables" > "$tmp_manifest"
sync -- "$tmp_manifest" 2>/dev/null || true
mv -f -- "$tmp_manifest" "$manifest"
sync -- "$DIR" 2>/dev/null || true
say "$base.dump: $size bytes, $(( $(date +%s) - start )) s"
# Retention: backups of this database older than the limit. The new one is never older.
pattern="${DB}_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z_*"
find "$DIR" -maxdepth 1 -type f \( -name "$pattern.dump" -o -name "$pattern.manifest.json" -o -name "$pattern.globals.sql" \) \
  -mmin "+$(( RETENTION_DAYS * 1440 ))" -print -delete | sed "s|^|metalship-backup: removed old |" >&2
find "$DIR" -maxdepth 1 -type f -name ".${DB}_*.partial" -mmin +1440 -delete
# The daily backup leaves the host where provision set up a backup host (it
# writes the push program); a failed copy fails the run, which alerts.
if [ "$LABEL" = daily ] && [ -x "$PUSH" ]; then "$PUSH" "$dump" >&2 || die "the copy to the backup host failed"; fi
printf '%s\n' "$dump"
