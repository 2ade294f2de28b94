// Paths root acts on. Root writes, chowns or deletes below a path only when no
// other user can swap a directory on the way there (a symlink planted by the
// app user would otherwise redirect root anywhere).

import { sh } from './sh.js';

/**
 * Defines `ms_root_only PATH`: fails, naming the culprit, unless every existing
 * directory on the way to PATH is root's and writable by root alone, both as
 * written (each directory that holds a component, links included: its owner
 * could re-point them) and as resolved. Missing components are fine: root
 * creates them.
 */
export const ROOT_ONLY_FUNCTION = [
  'ms_root_only() {',
  '  local path dir part rest owner mode',
  '  for path in "$1" "$(readlink -m -- "$1")"; do',
  '    dir=/',
  '    rest=${path#/}',
  '    while [ -e "$dir" ]; do',
  '      read -r owner mode <<<"$(stat -L -c \'%u %a\' -- "$dir")"',
  '      if [ "$owner" != 0 ] || [ $(( 8#$mode & 8#022 )) != 0 ]; then',
  '        echo "$dir is owned by uid $owner with mode $mode: $1 must be owned by root and writable by root alone, or another user could redirect what root does there" >&2',
  '        return 1',
  '      fi',
  '      [ -n "$rest" ] || break',
  '      part=${rest%%/*}',
  '      rest=${rest#"$part"}',
  '      rest=${rest#/}',
  '      dir=${dir%/}/$part',
  '    done',
  '  done',
  '}',
].join('\n');

/** Script lines that fail unless each path is safe for root to act below (see ROOT_ONLY_FUNCTION). */
export function rootOnly(...paths: string[]): string {
  return [ROOT_ONLY_FUNCTION, ...paths.map((p) => sh`ms_root_only ${p}`)].join('\n');
}

/** The state directory's mode, one everywhere: the lock, the history and the serving slot are root's. */
export const STATE_MODE = '700';
