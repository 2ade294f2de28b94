#!/bin/bash
# The restore test, on the backup host: the chosen backup's manifest (the
# newest of DATABASE in BACKUP_DIR, or FILE's), the host's clock and the
# record of the last successful verification (LAST_VERIFIED), as KEY value
# lines. Settings: BACKUP_DIR, DATABASE, FILE (empty: the newest),
# LAST_VERIFIED, RECEIVER, LAST_VERIFIED_COPY, EXIT_NO_BACKUP; ms_root_only
# (src/remote/paths.ts).
# A backup another user could have swapped proves nothing. The copies on a
# backup host are the receiving user's (RECEIVER) in a directory of root's:
# read as that user (READ_AS), so root never opens a path it could change;
# their sha256 is checked again where they are restored.
read_as=()
dir=$BACKUP_DIR
if [ -n "$FILE" ]; then dir=$(dirname -- "$FILE"); fi
if [ -d "$dir" ] && [ ! -L "$dir" ] && [ "$(stat -c %U -- "$dir")" = "$RECEIVER" ]; then
  ms_root_only "$(dirname -- "$dir")"
  read_as=(runuser -u "$RECEIVER" --)
  LAST_VERIFIED=$LAST_VERIFIED_COPY
  echo "READ_AS $RECEIVER"
  cd /
fi
if [ -n "$FILE" ]; then
  [ "${#read_as[@]}" -gt 0 ] || ms_root_only "$(dirname -- "$FILE")"
  dump=$FILE
else
  [ "${#read_as[@]}" -gt 0 ] || ms_root_only "$BACKUP_DIR"
  if [ ! -d "$BACKUP_DIR" ]; then echo "the backup directory $BACKUP_DIR does not exist on this host" >&2; exit "$EXIT_NO_BACKUP"; fi
  # Names carry the UTC stamp after the database: the newest is the largest stamp.
  dump=$("${read_as[@]}" find "$BACKUP_DIR" -maxdepth 1 -type f -name "$DATABASE"'_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z_*.dump' -printf '%f\n' | awk -v db="$DATABASE" '{ s = substr($0, length(db) + 2, 16); print s "\t" $0 }' | sort | tail -n 1 | cut -f2-)
  if [ -z "$dump" ]; then echo "no backup of database $DATABASE in $BACKUP_DIR" >&2; exit "$EXIT_NO_BACKUP"; fi
  dump="$BACKUP_DIR/$dump"
fi
if ! "${read_as[@]}" test -f "$dump"; then echo "the backup file $dump does not exist" >&2; exit "$EXIT_NO_BACKUP"; fi
manifest="${dump%.dump}.manifest.json"
if ! "${read_as[@]}" test -f "$manifest"; then echo "the backup $dump has no manifest ($manifest): it is incomplete or was not made by metalship" >&2; exit "$EXIT_NO_BACKUP"; fi
echo "DUMP $dump"
echo "SIZE $("${read_as[@]}" stat -c %s -- "$dump")"
echo "NOW $(date -u +%s)"
echo "MANIFEST $("${read_as[@]}" head -c 10000000 -- "$manifest" | tr -d '\n')"
if [ -f "$LAST_VERIFIED" ]; then echo "LAST $(head -c 10000 -- "$LAST_VERIFIED" | tr -d '\n')"; fi
