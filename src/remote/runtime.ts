// The runtime record of a release on a host: written by root when the release
// is built (and again by a switch told other settings), read back before any
// switch to it. src/inputs/runtime.ts holds its format and validation.

import type { Layout } from './layout.js';
import { script, sh } from './sh.js';
import { step, type Step } from './step.js';

/** The record's path: in the release's .metalship, which root owns and the app user cannot write. */
export function runtimePath(layout: Layout, releaseId: string): string {
  return `${layout.release(releaseId)}/.metalship/runtime.json`;
}

/**
 * The record's text, or null when the release has none (made before releases
 * recorded their settings). releaseId null: the current release's (through
 * `current`, root's link in root's directory).
 */
export function readRuntimeStep(layout: Layout, releaseId: string | null, max: number): Step<string | null> {
  const file =
    releaseId === null ? `${layout.current}/.metalship/runtime.json` : runtimePath(layout, releaseId);
  return step(
    `reading the settings recorded with ${releaseId ?? 'the current release'}`,
    script(
      // A regular file only, never followed through a link; one byte past the limit shows it is too long.
      sh`if [ -f ${file} ] && [ ! -L ${file} ]; then echo RECORD; head -c ${max + 1} ${file}; else echo NONE; fi`,
    ),
    (stdout) => (stdout.startsWith('RECORD\n') ? stdout.slice('RECORD\n'.length) : null),
  );
}
