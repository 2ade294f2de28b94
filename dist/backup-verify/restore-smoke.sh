#!/bin/bash
# The restore test, on the restore host: starts the current release's uvicorn
# on a private Unix socket with only DATABASE_URL set (pointing at the scratch
# database as the scratch role, which owns everything restored), waits for
# SMOKE_PATH to answer 200, and stops it. Prints "SMOKE skipped: <why>" or
# "SMOKE <wait-ready's JSON>". Settings: SCRATCH, ROLE, PASSWORD, APP_ROOT,
# APP_USER, APP_MODULE, SMOKE_PATH, SMOKE_TIMEOUT, PROBE_USER,
# EXIT_SMOKE_FAILED; restore-common.sh; mstool_as (src/remote/pytool.ts).
current=$APP_ROOT/current
if [ ! -d "$current/" ]; then echo "SMOKE skipped: no current release at $current on this host"; exit 0; fi
py="$current/.venv/bin/python"
[ -x "$py" ] || py=$APP_ROOT/venv/bin/python
if [ ! -x "$py" ]; then echo "SMOKE skipped: the current release has no virtualenv"; exit 0; fi
if ! id -u "$APP_USER" >/dev/null 2>&1; then echo "SMOKE skipped: the app user $APP_USER does not exist on this host"; exit 0; fi
read_port
# The app's output goes to a file in root's own directory; only the socket's
# directory is the app's (whatever the app puts there, root never reads it).
work=$(mktemp -d /run/metalship-verify-smoke.XXXXXX)
chmod 711 "$work"
mkdir "$work/sock"
chown "$APP_USER" "$work/sock"
sock="$work/sock/api.sock"
log="$work/app.log"
pid=""
# shellcheck disable=SC2317  # called by the EXIT trap
stop() { if [ -n "$pid" ]; then kill -TERM -- "-$pid" 2>/dev/null || true; for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.5; done; kill -KILL -- "-$pid" 2>/dev/null || true; fi; rm -rf -- "$work"; }
trap stop EXIT
url="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$SCRATCH"
# Only DATABASE_URL (and a path, a home, a locale) reaches the app, in its
# environment: exported in this subshell, never on a command line.
(
  cd "$current/" || exit 1
  for v in $(compgen -e); do unset "$v" 2>/dev/null || true; done
  # No PATH from here on: the venv's bin by expansion, not dirname.
  export PATH="${py%/*}:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/nonexistent LANG=C.UTF-8 DATABASE_URL="$url"
  exec setsid runuser -u "$APP_USER" -- "$py" -m uvicorn "$APP_MODULE" --uds "$sock" > "$log" 2>&1
) &
pid=$!
if out=$(mstool_as "$PROBE_USER" wait-ready "$sock" "$SMOKE_PATH" "$SMOKE_TIMEOUT" 1 200 ''); then echo "SMOKE $out"; else
  echo "SMOKE $out"
  echo "the current release did not answer on the scratch database; its output:" >&2
  out=$(tail -n 20 -- "$log")
  printf '%s\n' "${out//"$PASSWORD"/***}" >&2
  exit "$EXIT_SMOKE_FAILED"
fi
