// Paths root acts on. Root writes, chowns or deletes below a path only when no
// other user can swap a directory on the way there (a symlink planted by the
// app user would otherwise redirect root anywhere).

import { sh } from './sh.js';

/**
 * Defines `ms_root_only PATH...`: fails, naming the culprit, unless every
 * existing directory on the way to each PATH is root's and writable by root
 * alone: as written (each directory that holds a component, links included:
 * its owner could re-point them), as resolved, and through every link on the
 * way, whose own target is walked as written too (a hop through another
 * user's directory is caught). Missing components are fine: root creates them.
 * One readlink and one stat for all of them (plus a readlink per link met):
 * a process per directory made this the slowest part of a deploy's first step.
 */
export const ROOT_ONLY_FUNCTION = [
  'ms_root_only() {',
  '  [ "$#" -gt 0 ] || return 0',
  '  local path dir part rest owner mode target k i=0 hops=0 ro_stats',
  '  local -a ro_resolved=() ro_paths=() ro_names=() ro_dirs=() ro_of=()',
  // NUL-separated: a resolved path holding a newline cannot stand in for another.
  '  mapfile -d "" -t ro_resolved < <(readlink -zm -- "$@")',
  '  if [ "${#ro_resolved[@]}" != "$#" ]; then echo "could not resolve $*" >&2; return 1; fi',
  '  ro_paths=("$@" "${ro_resolved[@]}")',
  '  ro_names=("$@" "$@")',
  // The list grows while it is walked: each link met adds its target.
  '  for ((k = 0; k < ${#ro_paths[@]}; k++)); do',
  '    path=${ro_paths[$k]}',
  '    dir=/',
  '    rest=${path#/}',
  '    while [ -e "$dir" ]; do',
  '      ro_dirs+=("$dir")',
  '      ro_of+=("${ro_names[$k]}")',
  '      if [ -L "$dir" ]; then',
  '        hops=$((hops + 1))',
  '        if [ "$hops" -gt 40 ]; then echo "too many links on the way to ${ro_names[$k]}" >&2; return 1; fi',
  '        target=$(readlink -- "$dir")',
  '        case "$target" in /*) ;; *) target=${dir%/*}/$target ;; esac',
  '        ro_paths+=("$target")',
  '        ro_names+=("${ro_names[$k]}")',
  '      fi',
  '      [ -n "$rest" ] || break',
  '      part=${rest%%/*}',
  '      rest=${rest#"$part"}',
  '      rest=${rest#/}',
  '      dir=${dir%/}/$part',
  '    done',
  '  done',
  '  ro_stats=$(stat -L -c "%u %a" -- "${ro_dirs[@]}") || return 1',
  '  while read -r owner mode; do',
  '    if [ "$owner" != 0 ] || [ $(( 8#$mode & 8#022 )) != 0 ]; then',
  '      echo "${ro_dirs[$i]} is owned by uid $owner with mode $mode: ${ro_of[$i]} must be owned by root and writable by root alone, or another user could redirect what root does there" >&2',
  '      return 1',
  '    fi',
  '    i=$((i + 1))',
  '  done <<<"$ro_stats"',
  '}',
].join('\n');

/** Script lines that fail unless each path is safe for root to act below (see ROOT_ONLY_FUNCTION). */
export function rootOnly(...paths: string[]): string {
  return [ROOT_ONLY_FUNCTION, sh`ms_root_only ${paths}`].join('\n');
}

/** The state directory's mode, one everywhere: the lock, the history and the serving slot are root's. */
export const STATE_MODE = '700';
