#!/bin/bash
# The restore test, on the restore host, in the scratch database as the
# scratch role: row counts (JSON), amcheck of every btree index (with
# heapallindexed: it evaluates index expressions, the app's code), and each
# check query. Prints COUNTS <json>, AMCHECK <n> or AMCHECK_FAILED <text> (or
# neither when the database has no amcheck), CHECK <i> <t|f|error: ...>.
# Settings: SCRATCH, ROLE, PASSWORD, COUNTS_SQL, CHECKS (an array); restore-common.sh.
psql_role() { as_role psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$SCRATCH" "$@"; }
read_port
echo "COUNTS $(psql_role -c "$COUNTS_SQL")"
err=$(mktemp)
trap 'rm -f -- "$err"' EXIT
if [ "$(psql_role -c "SELECT count(*) FROM pg_proc WHERE proname = 'bt_index_check'")" != 0 ]; then
  amcheck_sql=$(cat <<'SQL'
SELECT c.oid::regclass::text, bt_index_check(c.oid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%';
SQL
  )
  if out=$(psql_role -c "$amcheck_sql" 2>"$err"); then echo "AMCHECK $(printf '%s\n' "$out" | grep -c . || true)"; else echo "AMCHECK_FAILED $(head -c 2000 "$err" | tr '\n' ' ')"; fi
fi
for i in "${!CHECKS[@]}"; do
  if out=$(psql_role -c "${CHECKS[$i]}" 2>"$err"); then echo "CHECK $i $(printf '%s' "$out" | tr '\n' ' ')"; else echo "CHECK $i error: $(head -c 500 "$err" | tr '\n' ' ')"; fi
done
