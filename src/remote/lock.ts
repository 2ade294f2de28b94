// The deploy lock of an app on a host: flock(2) on a file, held by a remote
// process that lives as long as our connection and our heartbeat. A killed run
// cannot leave it held: its process exits when the connection closes or the
// heartbeat stops, and the holder file it leaves is reported as stale.

import type { Layout } from './layout.js';
import { rootOnly, STATE_MODE } from './paths.js';
import { keyLines, script, sh, textVar } from './sh.js';
import { wrapScript } from './session.js';

export const LOCK_EXIT_HELD = 75;
/** Seconds without a heartbeat line after which the remote holder gives the lock up. */
export const LOCK_HEARTBEAT_LIMIT = 30;

export interface LockHolder {
  runUrl: string;
  actor: string;
  action: string;
  startedAt: string;
}

export function holderText(h: LockHolder): string {
  return `${h.action} by ${h.actor || 'unknown'} since ${h.startedAt} (${h.runUrl || 'no run URL'})`;
}

/** A line the lock script prints while it runs: it waits, it recovered a stale lock, or it holds the lock. */
export type LockEvent = { kind: 'waiting' | 'stale'; holder: string } | { kind: 'locked' } | null;

/** Reads one line of the lock script's output (the holder text is the host's: shown, never acted on). */
export function lockEvent(line: string): LockEvent {
  const out = keyLines(line);
  const waiting = out.get('WAITING');
  if (waiting !== undefined) return { kind: 'waiting', holder: waiting.trim() };
  const stale = out.get('STALE');
  if (stale !== undefined) return { kind: 'stale', holder: stale.trim() };
  return line === 'LOCKED' ? { kind: 'locked' } : null;
}

/** The longest first step's text (it goes in an environment string, which holds 128 KiB). */
const FIRST_STEP_MAX_BYTES = 96 * 1024;

/** Seconds the first step under the lock may take before it is stopped (it only reads). */
export const FIRST_STEP_LIMIT = 120;

/**
 * Runs a step's script under the lock just taken, in a bash of its own (as
 * every script runs: set -e, parsed whole), and prints how it ended as
 * FIRST_OUT, FIRST_ERR (base64) and FIRST_RC lines: what the rollback reads
 * first costs no round trip of its own.
 */
function firstUnderLock(first: string): string {
  // One environment string holds at most 128 KiB (MAX_ARG_STRLEN); the first steps are reads of a few.
  if (Buffer.byteLength(wrapScript(first)) > FIRST_STEP_MAX_BYTES)
    throw new Error(`the first step under the lock is longer than ${FIRST_STEP_MAX_BYTES} bytes`);
  return script(
    textVar('__metalship_first', wrapScript(first)),
    'first_dir=$(mktemp -d)',
    'first_rc=0',
    // Bounded (it reads, briefly), without the lock's descriptor (nothing it
    // leaves behind may hold the lock), its text in the environment of timeout
    // and its bash (not in ps; root's alone to read, for the step's life; unset
    // before any command of the step starts), parsed from memory: bash reads a
    // script from a pipe (a here-string is one) a byte at a time.
    '# shellcheck disable=SC2016',
    `__metalship_first="$__metalship_first" timeout -k 5 ${FIRST_STEP_LIMIT} bash -c 'first=$__metalship_first; unset __metalship_first; eval "$first"' 9>&- </dev/null >"$first_dir/out" 2>"$first_dir/err" || first_rc=$?`,
    'echo "FIRST_OUT $(base64 -w0 < "$first_dir/out")"',
    'echo "FIRST_ERR $(tail -c 8000 "$first_dir/err" | base64 -w0)"',
    'echo "FIRST_RC $first_rc"',
    'rm -rf -- "$first_dir"',
  ).trimEnd();
}

/** How the first step under the lock ended, from the lock script's lines (null: it printed none). */
export function firstEnding(lines: string): { code: number; stdout: string; stderr: string } | null {
  const out = keyLines(lines);
  const rc = out.get('FIRST_RC');
  if (rc === undefined || !/^\d+$/.test(rc)) return null;
  const text = (key: string) => Buffer.from(out.get(key) ?? '', 'base64').toString('utf8');
  return { code: Number(rc), stdout: text('FIRST_OUT'), stderr: text('FIRST_ERR') };
}

/**
 * `leftovers`: a script that stops what the run still runs on the host (see
 * Connection.leftoversScript), run when the run is gone, before the lock is let go.
 */
export function lockScript(
  layout: Layout,
  holder: LockHolder,
  waitSeconds: number,
  leftovers = '',
  /** A short, read-only script run once the lock is held, its ending printed before LOCKED (see firstUnderLock). */
  first = '',
): string {
  return script(
    rootOnly(layout.state),
    sh`mkdir -p ${layout.state}`,
    sh`chmod ${STATE_MODE} ${layout.state}`,
    sh`exec 9>>${layout.lockFile}`,
    sh`if ! flock -n 9; then`,
    sh`  echo "WAITING $(head -c 500 ${layout.lockHolder} 2>/dev/null | tr '\n' ' ')"`,
    sh`  if ! flock -w ${waitSeconds} 9; then`,
    sh`    echo "HELD $(head -c 500 ${layout.lockHolder} 2>/dev/null | tr '\n' ' ')"`,
    `    exit ${LOCK_EXIT_HELD}`,
    '  fi',
    'fi',
    // A holder file still filled in while nobody holds the flock: a run that died.
    sh`if [ -s ${layout.lockHolder} ]; then echo "STALE $(head -c 500 ${layout.lockHolder} | tr '\n' ' ')"; fi`,
    sh`printf '%s\n' ${holderText(holder)} > ${layout.lockHolder}`,
    first ? firstUnderLock(first) : null,
    'echo LOCKED',
    `while IFS= read -r -t ${LOCK_HEARTBEAT_LIMIT} line; do`,
    '  if [ "$line" = release ]; then',
    sh`    : > ${layout.lockHolder}`,
    '    exit 0',
    '  fi',
    'done',
    // EOF or no heartbeat: our run is gone. What it still runs here is stopped
    // first; the flock goes with this process; the holder stays as evidence.
    leftovers || null,
    sh`printf '%s\n' "abandoned at $(date -u +%FT%TZ): $(head -n1 ${layout.lockHolder})" > ${layout.lockHolder}`,
  );
}
