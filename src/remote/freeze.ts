// The deploy freeze of an app on a host (metalship lock / unlock): a file in
// the root-only state directory. While it exists, the actions that ship code
// refuse to run and print its reason. It is read back as untrusted text
// (whoever froze wrote it, and it reaches logs): control characters go,
// its length is bounded.

import type { Layout } from './layout.js';
import { rootOnly, STATE_MODE } from './paths.js';
import { keyLines, script, sh, writeFileAtomic } from './sh.js';
import { step, type Step } from './step.js';

export const REASON_MAX = 300;

export interface Freeze {
  reason: string;
  actor: string;
  at: string;
  runUrl: string;
}

// Control characters (C0, C1, line separators) and the bidirectional
// overrides that could make a log line read other than it is.
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** Text read from a host, made fit for one log line: no control characters, at most max characters. */
export function cleanText(text: string, max: number): string {
  const t = text.replace(UNSAFE, ' ').replace(/\s+/g, ' ').trim();
  return t.length > max ? t.slice(0, max - 1) + '…' : t;
}

/** A freeze as the file holds it (base64 of its bytes), whatever those are. */
export function parseFreeze(base64: string): Freeze {
  let doc: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(Buffer.from(base64, 'base64').toString('utf8'));
    if (parsed && typeof parsed === 'object') doc = parsed as Record<string, unknown>;
  } catch {
    // Unreadable: still a freeze; someone meant to stop deploys.
  }
  const field = (k: string, max: number) => cleanText(typeof doc[k] === 'string' ? doc[k] : '', max);
  return {
    reason: field('reason', REASON_MAX) || '(no reason given)',
    actor: field('actor', 100) || 'unknown',
    at: field('at', 40),
    runUrl: field('runUrl', 300),
  };
}

export function freezeText(f: Freeze): string {
  return `frozen${f.at ? ` since ${f.at}` : ''} by ${f.actor}: ${f.reason}${f.runUrl ? ` (${f.runUrl})` : ''}`;
}

/** A script line printing `FREEZE <base64>` when the app's deploys are frozen (the state directory checked first). */
export function readFreezeLine(layout: Layout): string {
  return sh`if [ -f ${layout.freeze} ] && [ ! -L ${layout.freeze} ]; then echo "FREEZE $(head -c 4000 ${layout.freeze} | base64 -w0)"; fi`;
}

export const parseFreezeLine = (stdout: string): Freeze | null => {
  const line = keyLines(stdout).get('FREEZE');
  return line === undefined ? null : parseFreeze(line);
};

/** Whether the app's deploys are frozen on the host. */
export function freezeCheckStep(layout: Layout): Step<Freeze | null> {
  return step(
    'checking for a deploy freeze',
    script(rootOnly(layout.state), readFreezeLine(layout)),
    parseFreezeLine,
  );
}

/**
 * Freezes the app's deploys: the file is root's, mode 600, in the root-only
 * state directory (the app user can neither write nor remove it). Returns the
 * freeze it replaced, if any.
 */
export function freezeStep(layout: Layout, freeze: Freeze): Step<Freeze | null> {
  return step(
    'freezing deploys',
    script(
      rootOnly(layout.state),
      sh`mkdir -p ${layout.state}`,
      sh`chmod ${STATE_MODE} ${layout.state}`,
      readFreezeLine(layout),
      writeFileAtomic(layout.freeze, JSON.stringify(freeze) + '\n', { mode: '600', owner: 'root:root' }),
    ),
    parseFreezeLine,
  );
}

/** Lifts the freeze; returns the one it removed (null: there was none). */
export function unfreezeStep(layout: Layout): Step<Freeze | null> {
  return step(
    'lifting the deploy freeze',
    script(rootOnly(layout.state), readFreezeLine(layout), sh`rm -f -- ${layout.freeze}`),
    parseFreezeLine,
  );
}
