// What runs around every script on a host: the wrapper that makes bash read the
// whole script before running it, the session record that lets a run's work be
// stopped, and the command the transport starts (bash, through sudo for others).
// The transport sends these; the provision's sudoers rule allows the command.

import { BUILD_UNIT_PREFIX } from './layout.js';

/** The shell each script runs in: bash reading the script from stdin. */
export const SCRIPT_SHELL = ['bash', '-se'] as const;
/** How a non-root SSH user becomes root for it. */
export const SUDO = ['sudo', '-n', '-H', '--'] as const;

/**
 * Wraps a script so bash parses all of it before running any of it: data that
 * follows on stdin is then read by the script's commands and never executed.
 * It starts in / (a login's home is root's alone: commands run as other users
 * could not enter it, and nothing is read relative to it).
 * With a token, the script's session id is written where a timeout can find it
 * and stop everything the script started.
 */
export function wrapScript(script: string, token?: string): string {
  const body = script.replace(/\r\n?/g, '\n');
  const record = token
    ? `mkdir -p ${SESSION_DIR} && read -r _ _ _ _ _ __metalship_sid _ < /proc/$$/stat && echo "$__metalship_sid" > ${SESSION_DIR}/${token}\n`
    : '';
  const forget = token ? `trap 'rm -f ${SESSION_DIR}/${token}' EXIT\n` : '';
  // The token also names what the script starts outside its session (build units).
  const named = token ? `__metalship_token=${token}\n` : '';
  return `set -euo pipefail\numask 022\ncd /\n${named}${record}${forget}__metalship_main() {\n${body}\n}\n{ __metalship_main; exit $?; }\n`;
}

/**
 * What the transport sends on stdin: a line that reads the wrapped script
 * whole (its length in bytes first) and runs it, then the script. bash reads
 * a script from a pipe a byte at a time (it must leave what follows for the
 * script's commands): a read per byte, tens of thousands a step, on every
 * step's path. `head -c` reads it in blocks and no further. A script cut short
 * never runs in part: it is one compound command, parsed whole. The command
 * stays `bash -se`, the one the deploy user's sudoers rule names.
 */
export function remoteScript(script: string, token?: string): string {
  // In braces: eval parses the whole text before it runs any of it, the preamble too.
  const wrapped = `{\n${wrapScript(script, token)}}\n`;
  return `IFS= read -r __metalship_n && __metalship_s=$(head -c "$__metalship_n") && eval "$__metalship_s"\n${Buffer.byteLength(wrapped)}\n${wrapped}`;
}

const SESSION_DIR = '/run/metalship-sessions';

/**
 * Stops every process of the scripts whose tokens match `pattern` (a token or a
 * glob of tokens): each script's whole session, TERM then KILL.
 */
export function killSessionScript(pattern: string): string {
  const files = `${SESSION_DIR}/${pattern}`;
  return [
    // Builds run as transient systemd units, outside the session: stopped by name.
    `systemctl stop -- '${BUILD_UNIT_PREFIX}${pattern}*' 2>/dev/null || true`,
    `sids=""; for f in ${files}; do if [ -s "$f" ]; then sid=$(cat "$f"); case "$sid" in *[!0-9]*) ;; *) sids="$sids $sid";; esac; fi; done`,
    'if [ -n "$sids" ]; then for sid in $sids; do pkill -TERM -s "$sid" || true; done; sleep 1; for sid in $sids; do pkill -KILL -s "$sid" || true; done; fi',
    `rm -f ${files}`,
  ].join('\n');
}

/** The remote command: bash reading the script from stdin, through sudo for non-root users. */
export function remoteCommand(user: string): string {
  return (user === 'root' ? SCRIPT_SHELL : [...SUDO, ...SCRIPT_SHELL]).join(' ');
}
