#!/bin/bash
# The restore test, on the restore host: checks the dump (received on stdin
# after the script when RECEIVE=1, else DUMP_PATH read in place) against the
# manifest's size and sha256, creates the scratch role and database (both
# marked as ours; the database empty and the role's), the dump's extensions
# and amcheck while it is still empty, then restores the rest with
# --exit-on-error as the scratch role. Settings: SCRATCH, MARKER, ROLE,
# PASSWORD, RECEIVE, DUMP_PATH, WANT_SIZE, WANT_SHA, EXIT_CHECKSUM,
# EXIT_RESTORE_FAILED; restore-common.sh.
# First read everything that was sent, so the sender never blocks on a script that stopped early.
work=$(mktemp -d /var/tmp/metalship-verify.XXXXXX)
trap 'rm -rf -- "$work"' EXIT
if [ "$RECEIVE" = 1 ]; then
  # The dump follows the script on stdin, streamed from the backup host through the runner.
  # One byte more than the manifest says is enough to tell it is wrong: the rest is read, never written.
  { head -c "$((WANT_SIZE + 1))" > "$work/backup.dump"; cat > /dev/null; }
  dump="$work/backup.dump"
  echo "RECEIVED $(stat -c %s -- "$dump")"
else
  dump=$DUMP_PATH
fi
size=$(stat -c %s -- "$dump")
if [ "$size" != "$WANT_SIZE" ]; then echo "the dump is $size bytes but its manifest says $WANT_SIZE: it is truncated or was changed after the backup" >&2; exit "$EXIT_CHECKSUM"; fi
sha=$(sha256sum -- "$dump" | cut -d" " -f1)
if [ "$sha" != "$WANT_SHA" ]; then echo "the dump's sha256 $sha does not match its manifest's $WANT_SHA: it was changed or damaged after the backup" >&2; exit "$EXIT_CHECKSUM"; fi
echo "CHECKSUM ok"
read_port
# The role and its database. CREATE DATABASE fails if the name was taken
# since the preparation: never someone else's. The password goes on stdin.
{ printf '\\set password %s\n' "$PASSWORD"; cat <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
COMMENT ON ROLE :"role" IS :'marker';
CREATE DATABASE :"name" OWNER :"role" TEMPLATE template0;
COMMENT ON DATABASE :"name" IS :'marker';
SQL
} | psql_super -d postgres -v role="$ROLE" -v name="$SCRATCH" -v marker="$MARKER"
echo "CREATED $SCRATCH"
# Extensions need a superuser: made now, from the server's own files, in the
# empty database (the dump's names and schemas only, quoted by psql); then
# amcheck for the checks, its function granted to the role.
pg_restore -l -- "$dump" > "$work/all.list"
grep -E '^[0-9]+; [0-9]+ [0-9]+ EXTENSION - ' "$work/all.list" > "$work/ext.list" || true
grep -vE '^[0-9]+; [0-9]+ [0-9]+ (EXTENSION|COMMENT - EXTENSION) ' "$work/all.list" > "$work/rest.list" || true
if [ -s "$work/ext.list" ]; then
  pg_restore -f - -L "$work/ext.list" -- "$dump" | sed -n 's/^CREATE EXTENSION IF NOT EXISTS \(.*\) WITH SCHEMA \(.*\);$/\1 \2/p' > "$work/ext.names"
  while read -r ext schema; do
    ext=${ext#\"}; ext=${ext%\"}; schema=${schema#\"}; schema=${schema%\"}
    psql_super -d "$SCRATCH" -v ext="$ext" -v schema="$schema" -v role="$ROLE" <<'SQL'
CREATE SCHEMA IF NOT EXISTS :"schema" AUTHORIZATION :"role";
CREATE EXTENSION IF NOT EXISTS :"ext" WITH SCHEMA :"schema";
SQL
  done < "$work/ext.names"
fi
if psql_super -d "$SCRATCH" -v role="$ROLE" >/dev/null 2>"$work/amcheck.err" <<'SQL'
CREATE EXTENSION IF NOT EXISTS amcheck;
GRANT EXECUTE ON FUNCTION bt_index_check(regclass, boolean) TO :"role";
SQL
then :; else echo "AMCHECK_UNAVAILABLE $(head -c 500 "$work/amcheck.err" | tr '\n' ' ')"; fi
start=$(date +%s.%N)
# Owners and grants name roles the restore host may not have: everything becomes the scratch role's.
if ! as_role pg_restore --exit-on-error --no-owner --no-privileges -L "$work/rest.list" -d "$SCRATCH" -- "$dump" 2> "$work/restore.err"; then
  echo "pg_restore failed: $(head -c 3000 "$work/restore.err")" >&2
  exit "$EXIT_RESTORE_FAILED"
fi
end=$(date +%s.%N)
echo "RESTORED $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')"
