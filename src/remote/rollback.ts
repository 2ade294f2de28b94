// What a rollback reads before it moves traffic, in one round trip per host:
// the releases, the deploy freeze, and the runtime record of the release it
// most likely goes to (the one the standby slot holds, or the one named).

import { readFreezeLine, parseFreezeLine, type Freeze } from './freeze.js';
import type { Layout } from './layout.js';
import { rootOnly } from './paths.js';
import { pyToolDefinition } from './pytool.js';
import { runtimePath } from './runtime.js';
import { keyLines, quote, script, sh } from './sh.js';
import { step, type Step } from './step.js';
import type { ReleaseListing } from './verify.js';

export interface RollbackPlan {
  listing: ReleaseListing;
  freeze: Freeze | null;
  /** The release whose record was read ('' for none: the standby slot holds nothing). */
  recordOf: string;
  /** That release's runtime record (null: it has none). */
  record: string | null;
}

/**
 * requested: the release-id input ('' for the default target: the release the
 * standby slot holds, which is the one a rollback goes back to after a deploy).
 */
export function rollbackPlanStep(layout: Layout, requested: string, max: number): Step<RollbackPlan> {
  // runtimePath's file for the release named in $of, the rest quoted as always.
  const file = `${quote(layout.release(''))}"$of"${runtimePath(layout, '').slice(layout.release('').length)}`;
  return step(
    'reading the releases, the freeze and the rollback target',
    script(
      pyToolDefinition(),
      rootOnly(layout.state),
      sh`listing=$(mstool releases ${layout.root} | tail -n 1)`,
      'echo "LISTING $listing"',
      readFreezeLine(layout),
      requested
        ? sh`of=${requested}`
        : script(
            sh`active=$(cat ${layout.activeSlot} 2>/dev/null || true)`,
            'case "$active" in blue) standby=green ;; green) standby=blue ;; *) standby="" ;; esac',
            sh`of=$(if [ -n "$standby" ]; then basename "$(readlink ${layout.slots}/"$standby" 2>/dev/null)" 2>/dev/null; fi || true)`,
          ).trimEnd(),
      'case "$of" in ""|.|..|*/*) of="" ;; esac',
      'echo "RECORD_OF $of"',
      // A regular file only, never followed through a link; one byte past the limit shows it is too long.
      `if [ -n "$of" ] && [ -f ${file} ] && [ ! -L ${file} ]; then echo "RECORD $(head -c ${max + 1} ${file} | base64 -w0)"; fi`,
    ),
    (stdout) => {
      const out = keyLines(stdout);
      const record = out.get('RECORD');
      return {
        listing: JSON.parse(out.get('LISTING') ?? '{}') as ReleaseListing,
        freeze: parseFreezeLine(stdout),
        recordOf: out.get('RECORD_OF') ?? '',
        record: record === undefined ? null : Buffer.from(record, 'base64').toString('utf8'),
      };
    },
  );
}
