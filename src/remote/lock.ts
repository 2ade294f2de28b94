// The deploy lock of an app on a host: flock(2) on a file, held by a remote
// process that lives as long as our connection and our heartbeat. A killed run
// cannot leave it held: its process exits when the connection closes or the
// heartbeat stops, and the holder file it leaves is reported as stale.

import type { Layout } from './layout.js';
import { rootOnly, STATE_MODE } from './paths.js';
import { keyLines, script, sh } from './sh.js';

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

/**
 * `leftovers`: a script that stops what the run still runs on the host (see
 * Connection.leftoversScript), run when the run is gone, before the lock is let go.
 */
export function lockScript(layout: Layout, holder: LockHolder, waitSeconds: number, leftovers = ''): string {
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
