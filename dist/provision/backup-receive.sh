#!/bin/bash
# The backup receiver's body (/usr/local/sbin/metalship-backup-receive-{app}
# on the backup host; see src/remote/offsite.ts, which writes the program: a
# header, the settings as quoted assignments, then this file). It is the forced
# command of the database host's push key (authorized_keys: restrict,command=)
# and runs as the receiving user, never root. It only ever adds a backup:
# `put <db>_<stamp>_daily` with the manifest's one line, then the dump's bytes,
# on stdin. Settings: DB, DIR, RETENTION_DAYS, NAME_PATTERN, SKEW, WINDOW,
# MAX_COPIES, MIN_FREE_MB, CHECK_MANIFEST (python), EXIT_REFUSED, EXIT_EXISTS,
# EXIT_MISMATCH, EXIT_FULL, EXIT_FAILED.
set -euo pipefail
umask 077
say() { printf 'metalship-backup-receive: %s\n' "$*" >&2; }
refuse() { say "refused: $2"; exit "$1"; }
request=${SSH_ORIGINAL_COMMAND:-}
# Nothing but one put of a well-formed name of this database: no shell, no read, no path.
[[ $request =~ ^put\ (${DB}_${NAME_PATTERN})$ ]] || refuse "$EXIT_REFUSED" "only 'put <name of a daily backup of $DB>' is accepted"
base=${BASH_REMATCH[1]}
cd -- "$DIR"
dump=$base.dump
manifest=$base.manifest.json
tmp_dump=""
tmp_manifest=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { rm -f -- "$tmp_dump" "$tmp_manifest"; }
trap cleanup EXIT
# The manifest's line (backup.sh writes it on one line), at most 10 MB, read
# whole and strictly: its exact keys and types, this name, created equal to the
# stamp, and the stamp a real UTC time of the last WINDOW seconds.
line=""
IFS= read -r -n 10000000 line || refuse "$EXIT_MISMATCH" "no manifest line before the dump"
rc=0
checked=$(printf '%s\n' "$line" | python3 -I -c "$CHECK_MANIFEST" "$DB" "$base" "$SKEW" "$WINDOW") || rc=$?
case $rc in
  0) ;;
  2) refuse "$EXIT_REFUSED" "$base: ${checked:0:300}" ;;
  *) refuse "$EXIT_MISMATCH" "the manifest of $base: ${checked:0:300}" ;;
esac
read -r size sha <<< "$checked"
# A name is taken once. Only the same dump there is "exists" (the push then
# succeeds); anything else under the name, or a link that fails, is a failure.
# shellcheck disable=SC2317  # called below
taken() {
  if [ -f "$dump" ] && [ ! -L "$dump" ] && [ -f "$manifest" ] && [ ! -L "$manifest" ] &&
    [ "$(sha256sum < "$dump" | cut -d' ' -f1)" = "$sha" ]; then
    refuse "$EXIT_EXISTS" "$base is here already, with the same sha256: a copy is never replaced"
  fi
  refuse "$EXIT_FAILED" "$1"
}
if [ -e "$dump" ] || [ -L "$dump" ] || [ -e "$manifest" ] || [ -L "$manifest" ]; then
  taken "another file is under the name $base: a copy is never replaced"
fi
# A real UTC stamp of the past (this host's clock, SKEW ahead allowed): its
# time, else nothing (the copy is then prunable, never kept for it).
stamp_time() {
  local s=$1 w
  w=$(date -u -d "${s:0:4}-${s:4:2}-${s:6:2} ${s:9:2}:${s:11:2}:${s:13:2}" +%s 2>/dev/null) || return 0
  if [ "$(date -u -d "@$w" +%Y%m%dT%H%M%SZ)" = "$s" ] && [ "$w" -le $((now + SKEW)) ]; then printf '%s' "$w"; fi
}
# Retention by the stamp in the name, against this host's clock: a push can add
# copies, never make older ones go before their time. A stamp that is not a
# real time of the past is pruned; the newest real one always stays.
# Run before the limits are checked, and again once the new copy is in.
prune() {
  local copies old stamp when newest
  copies=("${DB}"_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z_*.dump)
  newest=""
  for old in "${copies[@]}"; do
    [ -f "$old" ] || continue
    stamp=${old:${#DB}+1:16}
    if [ -n "$(stamp_time "$stamp")" ] && [[ $stamp > "$newest" ]]; then newest=$stamp; fi
  done
  for old in "${copies[@]}"; do
    [ -f "$old" ] || continue
    stamp=${old:${#DB}+1:16}
    when=$(stamp_time "$stamp")
    if [ "$stamp" = "$newest" ]; then continue; fi
    if [ -z "$when" ] || [ $((now - when)) -gt $((RETENTION_DAYS * 86400)) ]; then
      rm -f -- "$old" "${old%.dump}.manifest.json"
      say "removed old ${old}"
    fi
  done
}
# Puts are serialised where they count and take room: the prune, the checks
# and the reservation of a partial below, then the links and the last prune.
# The lock is the receiving user's file, taken only by this program, which
# runs as that user: nothing of root's ever waits on it. The dump's bytes
# arrive outside it, so a stalled push holds up no other.
exec 9>> .receive.lock
lock() { flock -w 600 9 || refuse "$EXIT_FAILED" "another put held the lock of $DIR for 10 minutes"; }
lock
now=$(date -u +%s)
prune
find . -maxdepth 1 -type f -name '.*.partial' -mmin +1440 -delete
# Room: at most MAX_COPIES copies, and MIN_FREE_MB left free once this one is
# in, the copies still arriving counted with what they announced (in their
# partial's name) and have yet to write.
count=$(find . -maxdepth 1 -type f -name "${DB}_*.dump" | wc -l)
pending_kb=0
for partial in .*.dump.*.partial; do
  [ -f "$partial" ] || continue
  count=$((count + 1))
  announced=${partial%.*.partial}
  announced=${announced##*.}
  [[ $announced =~ ^[0-9]{1,15}$ ]] || continue
  left=$((announced - $(stat -c %s -- "$partial" 2>/dev/null || echo "$announced")))
  [ "$left" -le 0 ] || pending_kb=$((pending_kb + left / 1024 + 1))
done
[ "$count" -lt "$MAX_COPIES" ] || refuse "$EXIT_FULL" "$count copies of $DB are here or arriving, the most kept is $MAX_COPIES"
free_kb=$(($(df -P -k -- . | awk 'NR == 2 { print $4 }') - pending_kb))
[ $((free_kb - size / 1024)) -ge $((MIN_FREE_MB * 1024)) ] ||
  refuse "$EXIT_FULL" "$dump ($size bytes) would leave less than $MIN_FREE_MB MB free ($((free_kb / 1024)) MB free once the copies arriving are in)"
tmp_dump=$(mktemp ".$base.dump.$size.XXXXXX.partial")
tmp_manifest=$(mktemp ".$base.manifest.XXXXXX.partial")
flock -u 9
# One byte more than announced is enough to tell a longer stream.
head -c "$((size + 1))" > "$tmp_dump"
got=$(stat -c %s -- "$tmp_dump")
[ "$got" = "$size" ] || refuse "$EXIT_MISMATCH" "$dump: $got bytes arrived, the manifest says $size"
got=$(sha256sum -- "$tmp_dump" | cut -d' ' -f1)
[ "$got" = "$sha" ] || refuse "$EXIT_MISMATCH" "$dump: sha256 $got, the manifest says $sha"
printf '%s\n' "$line" > "$tmp_manifest"
sync -- "$tmp_dump" "$tmp_manifest" 2>/dev/null || true
lock
# A hard link never replaces an existing name: two puts of one name, one wins.
ln -- "$tmp_dump" "$dump" || taken "$dump could not be stored"
if ! ln -- "$tmp_manifest" "$manifest"; then
  # No dump without its manifest: ours goes again.
  if [ "$dump" -ef "$tmp_dump" ] && [ ! -e "$manifest" ]; then rm -f -- "$dump"; fi
  taken "$manifest could not be stored"
fi
# The copy is in: its partials go under the lock, never counted twice.
rm -f -- "$tmp_dump" "$tmp_manifest"
sync -- . 2>/dev/null || true
say "$dump: $size bytes, sha256 as in its manifest"
prune
echo "RECEIVED $base"
