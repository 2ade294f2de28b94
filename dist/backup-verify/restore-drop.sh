#!/bin/bash
# The restore test, on the restore host, always at the end: drops the scratch
# database (if ours), the scratch role and what a killed run left. Prints
# DROPPED <name>, and LEFT <n>: how many of the two are still there.
# Settings: SCRATCH, MARKER, ROLE; restore-common.sh.
state=$(scratch_state)
if [ "$state" = ours ]; then
  drop_scratch
  echo "DROPPED $SCRATCH"
elif [ "$state" = other ]; then echo "not dropping $SCRATCH: it is not a scratch database of metalship" >&2; fi
psql_super -d postgres -v role="$ROLE" <<'SQL'
SELECT format('DROP ROLE %I', rolname) FROM pg_roles WHERE rolname = :'role' \gexec
SQL
# Leftovers of a killed run: root's own only (/var/tmp is everyone's).
find /var/tmp /run -maxdepth 1 -name 'metalship-verify*' -user root -exec rm -rf -- {} + 2>/dev/null || true
left=$(psql_super -d postgres -v name="$SCRATCH" -v role="$ROLE" <<'SQL'
SELECT (SELECT count(*) FROM pg_database WHERE datname = :'name') + (SELECT count(*) FROM pg_roles WHERE rolname = :'role');
SQL
)
echo "LEFT $left"
