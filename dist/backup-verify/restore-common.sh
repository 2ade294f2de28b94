#!/bin/bash
# The restore test's helpers on the restore host, included by each of its
# steps there (src/remote/restore.ts). Settings: SCRATCH, MARKER, and ROLE
# and PASSWORD where a step connects as the scratch role.
# Not every step calls every helper: hence each one's SC2317 (unreachable).

# PostgreSQL as its superuser: the local postgres user, through the socket.
# shellcheck disable=SC2317
psql_super() { runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

# Sets PORT, the server's port, for as_role and the smoke test's URL.
# shellcheck disable=SC2317
read_port() { PORT=$(psql_super -d postgres -c 'SHOW port'); }

# A libpq client as the scratch role over 127.0.0.1 (after read_port), its
# password in the environment (never on a command line).
# shellcheck disable=SC2317
as_role() { PGPASSWORD="$PASSWORD" PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER="$ROLE" PGCONNECT_TIMEOUT=10 "$@"; }

# Prints whose the database named SCRATCH is: none (there is none), ours (it
# carries our marker as its comment) or other. Only ours is ever dropped.
# shellcheck disable=SC2317
scratch_state() {
  local comment
  comment=$(psql_super -d postgres -v name="$SCRATCH" <<'SQL'
SELECT coalesce(shobj_description(oid, 'pg_database'), '') || '|' FROM pg_database WHERE datname = :'name';
SQL
  ) || return
  if [ -z "$comment" ]; then echo none; elif [ "$comment" = "$MARKER|" ]; then echo ours; else echo other; fi
}

# Drops the scratch database, once scratch_state said it is ours.
# shellcheck disable=SC2317
drop_scratch() {
  psql_super -d postgres -v name="$SCRATCH" <<'SQL'
DROP DATABASE :"name" WITH (FORCE);
SQL
}
