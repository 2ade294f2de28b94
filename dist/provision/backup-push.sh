#!/bin/bash
# The push of a backup to the backup host (/usr/local/sbin/metalship-backup-push-{app}
# on the database's host; see src/remote/offsite.ts, which writes the program: a
# header, the settings as quoted assignments, then this file). Run by the backup
# program after each daily backup, as root: the key is root's. Sends the
# manifest's line, then the dump, to the receiver, which checks both on arrival.
# Settings: DIR, TARGET_HOST, TARGET_PORT, TARGET_USER, KEY, KNOWN_HOSTS,
# EXIT_EXISTS. Usage: metalship-backup-push-APP DUMP
set -euo pipefail
say() { printf 'metalship-backup-push: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
dump=${1:?usage: metalship-backup-push-APP DUMP}
base=$(basename -- "$dump" .dump)
manifest=$DIR/$base.manifest.json
[[ -f $DIR/$base.dump && -f $manifest ]] || die "$base: no dump with its manifest in $DIR"
rc=0
# Only the pinned key of the backup host is accepted: no trust on first use here.
{ tr -d '\n' < "$manifest"; printf '\n'; cat -- "$DIR/$base.dump"; } |
  ssh -F /dev/null -i "$KEY" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes \
    -o UserKnownHostsFile="$KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no \
    -o ConnectTimeout=30 -o ServerAliveInterval=30 -o ServerAliveCountMax=4 \
    -p "$TARGET_PORT" -l "$TARGET_USER" -- "$TARGET_HOST" "put $base" >&2 || rc=$?
if [ "$rc" = "$EXIT_EXISTS" ]; then say "$base is already on $TARGET_HOST"; exit 0; fi
[ "$rc" = 0 ] || die "the copy of $base to $TARGET_HOST failed (exit $rc)"
say "$base copied to $TARGET_HOST"
