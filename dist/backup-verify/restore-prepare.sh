#!/bin/bash
# The restore test, on the restore host, before anything is copied: the tools
# are there, and the scratch name is free or a leftover of ours (dropped then).
# A database of that name that is not ours is refused. Settings: SCRATCH,
# MARKER, EXIT_NOT_OURS; restore-common.sh.
for tool in pg_restore psql sha256sum runuser; do command -v "$tool" >/dev/null || { echo "$tool is not installed on this host" >&2; exit 1; }; done
state=$(scratch_state)
if [ "$state" = other ]; then echo "a database named $SCRATCH exists and is not a scratch database of metalship: refusing to touch it (choose another scratch-database)" >&2; exit "$EXIT_NOT_OURS"; fi
if [ "$state" = ours ]; then
  drop_scratch
  echo "DROPPED_LEFTOVER $SCRATCH"
fi
# Scratch roles a killed run left (marked as ours, owning nothing now).
psql_super -d postgres -v marker="$MARKER" <<'SQL'
SELECT format('DROP ROLE %I', rolname) FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = :'marker' \gexec
SQL
echo "FREE $(psql_super -d postgres -c 'SHOW server_version')"
