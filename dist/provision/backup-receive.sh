#!/bin/bash
# The backup receiver's body (/usr/local/sbin/metalship-backup-receive-{app}
# on the backup host; see src/remote/offsite.ts, which writes the program: a
# header, the settings as quoted assignments, then this file). It is the forced
# command of the database host's push key (authorized_keys: restrict,command=)
# and runs as the receiving user, never root. It only ever adds a backup:
# `put <name>` with the manifest's one line, then the dump's bytes, on stdin.
# Settings: DB, DIR, RETENTION_DAYS, NAME_PATTERN, EXIT_REFUSED, EXIT_EXISTS,
# EXIT_MISMATCH.
set -euo pipefail
umask 077
say() { printf 'metalship-backup-receive: %s\n' "$*" >&2; }
refuse() { say "refused: $2"; exit "$1"; }
request=${SSH_ORIGINAL_COMMAND:-}
# Nothing but one put of a well-formed name of this database: no shell, no read, no path.
[[ $request =~ ^put\ (${DB}_${NAME_PATTERN})$ ]] || refuse "$EXIT_REFUSED" "only 'put <name of a backup of $DB>' is accepted"
base=${BASH_REMATCH[1]}
cd -- "$DIR"
dump=$base.dump
manifest=$base.manifest.json
tmp_dump=""
tmp_manifest=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { rm -f -- "$tmp_dump" "$tmp_manifest"; }
trap cleanup EXIT
if [ -e "$dump" ] || [ -e "$manifest" ]; then refuse "$EXIT_EXISTS" "$base exists: a copy is never replaced"; fi
# The manifest's line (backup.sh writes it on one line), at most 10 MB.
line=""
IFS= read -r -n 10000000 line || refuse "$EXIT_MISMATCH" "no manifest line before the dump"
# Its leading fields, in the order backup.sh writes them (the tables follow).
head_re='^\{"database": "([^"]*)", "created": "[^"]*", "label": "[^"]*", "file": "([^"]*)", "size": ([0-9]{1,15}), "sha256": "([0-9a-f]{64})", '
[[ $line =~ $head_re ]] || refuse "$EXIT_MISMATCH" "the manifest of $base is not one metalship writes"
[[ ${BASH_REMATCH[1]} == "$DB" && ${BASH_REMATCH[2]} == "$dump" ]] || refuse "$EXIT_MISMATCH" "the manifest of $base is of another backup (${BASH_REMATCH[2]})"
size=${BASH_REMATCH[3]}
sha=${BASH_REMATCH[4]}
tmp_dump=$(mktemp ".$base.dump.XXXXXX.partial")
tmp_manifest=$(mktemp ".$base.manifest.XXXXXX.partial")
# One byte more than announced is enough to tell a longer stream.
head -c "$((size + 1))" > "$tmp_dump"
got=$(stat -c %s -- "$tmp_dump")
[ "$got" = "$size" ] || refuse "$EXIT_MISMATCH" "$dump: $got bytes arrived, the manifest says $size"
got=$(sha256sum -- "$tmp_dump" | cut -d' ' -f1)
[ "$got" = "$sha" ] || refuse "$EXIT_MISMATCH" "$dump: sha256 $got, the manifest says $sha"
printf '%s\n' "$line" > "$tmp_manifest"
sync -- "$tmp_dump" "$tmp_manifest" 2>/dev/null || true
# A hard link never replaces an existing name: two puts of one name, one wins.
ln -- "$tmp_dump" "$dump" 2>/dev/null || refuse "$EXIT_EXISTS" "$dump exists: a copy is never replaced"
ln -- "$tmp_manifest" "$manifest" 2>/dev/null || refuse "$EXIT_EXISTS" "$manifest exists: a copy is never replaced"
sync -- . 2>/dev/null || true
say "$dump: $size bytes, sha256 as in its manifest"
# Retention by the stamp in the name, against this host's clock: a push can add
# copies, never make older ones go before their time. The copy just received stays.
now=$(date -u +%s)
for old in "${DB}"_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z_*.dump; do
  if [ ! -f "$old" ] || [ "$old" = "$dump" ]; then continue; fi
  stamp=${old:${#DB}+1:16}
  when=$(date -u -d "${stamp:0:4}-${stamp:4:2}-${stamp:6:2} ${stamp:9:2}:${stamp:11:2}:${stamp:13:2}" +%s 2>/dev/null) || continue
  if [ $((now - when)) -gt $((RETENTION_DAYS * 86400)) ]; then
    rm -f -- "$old" "${old%.dump}.manifest.json"
    say "removed old ${old}"
  fi
done
find . -maxdepth 1 -type f -name '.*.partial' -mmin +1440 -delete
echo "RECEIVED $base"
