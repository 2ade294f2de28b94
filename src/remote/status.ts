// What a host says about an app's deploys, for `metalship status`: the serving
// slot and which api slots run, the deploy lock (whether a process holds it and
// who took it last), the freeze, and the end of the history log. The releases
// themselves come from listStep.

import { cleanText, parseFreeze, readFreezeLine, type Freeze } from './freeze.js';
import type { Layout } from './layout.js';
import { rootOnly } from './paths.js';
import { keyLines, script, sh } from './sh.js';
import { step, type Step } from './step.js';

export interface HostState {
  /** Nothing deployed here yet (no state directory). */
  empty: boolean;
  activeSlot: string;
  /** The api slots whose units are running. */
  running: string[];
  /** Whether a process holds the deploy lock now. */
  locked: boolean;
  /** Who took the lock last (cleared when a run lets it go; an abandoned run's note stays). */
  holder: string;
  freeze: Freeze | null;
  history: string[];
}

/** A path as a find(1) pattern that matches it alone. */
const globEscape = (p: string) => p.replace(/[*?[\]\\]/g, '\\$&');

const decode = (b64: string | undefined) => (b64 ? Buffer.from(b64, 'base64').toString('utf8') : '');

export function statusStep(layout: Layout, historyLines: number): Step<HostState> {
  const lock = layout.lockFile;
  return step(
    'reading the deploy state',
    script(
      rootOnly(layout.state),
      sh`if [ ! -d ${layout.state} ]; then echo EMPTY; exit 0; fi`,
      sh`echo "SLOT $(head -c 20 ${layout.activeSlot} 2>/dev/null || true)"`,
      ...(['blue', 'green'] as const).map(
        (s) => sh`if systemctl is-active --quiet ${layout.units.api(s)}; then echo "RUNNING ${s}"; fi`,
      ),
      // Held: a process has the lock file open (its holder, and any run waiting
      // behind it). Not found by taking the lock: even a brief hold would make a
      // starting deploy wait; and /proc/locks hides a container's locks.
      sh`if [ -f ${lock} ] && [ -n "$(find /proc/[0-9]*/fd -maxdepth 1 -type l -lname ${globEscape(lock)} -print -quit 2>/dev/null)" ]; then echo LOCKED; fi`,
      sh`if [ -s ${layout.lockHolder} ]; then echo "HOLDER $(head -c 1000 ${layout.lockHolder} | base64 -w0)"; fi`,
      readFreezeLine(layout),
      sh`if [ -f ${layout.history} ]; then echo "HISTORY $(tail -n ${historyLines} ${layout.history} | head -c 40000 | base64 -w0)"; fi`,
    ),
    (stdout) => {
      const out = keyLines(stdout);
      const freeze = out.get('FREEZE');
      return {
        empty: out.get('EMPTY') !== undefined,
        activeSlot: cleanText(out.get('SLOT') ?? '', 20),
        running: out.all('RUNNING'),
        locked: out.get('LOCKED') !== undefined,
        holder: cleanText(decode(out.get('HOLDER')), 500),
        freeze: freeze === undefined ? null : parseFreeze(freeze),
        history: decode(out.get('HISTORY'))
          .split('\n')
          .map((l) => cleanText(l, 500))
          .filter(Boolean),
      };
    },
  );
}
