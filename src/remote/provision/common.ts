// What every provision item shares: the protocol its script speaks (lines
// `changed <what>` and `warning <what>` on stdout; a non-zero exit is a failure,
// its stderr the reason), the CHECK flag every script honours (CHECK=1 reports
// what would change and changes nothing), and bash helpers for packages and files.

import { heredoc, keyLines, raw, script, sh, type Raw } from '../sh.js';
import { plainStep, reportingStep, type Step } from '../step.js';

export type ItemName =
  | 'system'
  | 'sysctl'
  | 'users'
  | 'python'
  | 'app'
  | 'postgresql'
  | 'redis'
  | 'nginx'
  | 'tls'
  | 'firewall'
  | 'ssh'
  | 'logs'
  | 'monitoring'
  | 'alerts'
  | 'offsite';

/**
 * A change that could cut the runner off (firewall, sshd): after it, the stage
 * opens a fresh connection; `confirm` keeps the change, `revert` undoes it. A
 * timer armed by the apply script reverts by itself if neither ever comes.
 */
export interface Guard {
  confirm: string;
  revert: string;
}

export interface Item {
  name: ItemName;
  /** Runs with CHECK=0 or CHECK=1 set by the prelude. */
  script: string;
  /**
   * The item's refusals, read-only (the script decides them again): the run
   * pre-checks every item on every host before any item changes anything, so
   * a refusal leaves every host as it was (an earlier item's .env included).
   */
  precheck?: string;
  guard?: Guard;
}

/** Each helper is defined for every item and called by those that need it. */
const CALLED_BY_ITEMS = '# shellcheck disable=SC2317 # called by the items that need it';

/** Bash helpers every item script starts with. */
export function prelude(check: boolean): string {
  return script(
    `CHECK=${check ? 1 : 0}`,
    'export DEBIAN_FRONTEND=noninteractive LC_ALL=C',
    // Ubuntu's needrestart would restart services (sshd, the app) after each
    // install, or ask: provision restarts what it changes itself.
    'export NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=l',
    // A change, or with CHECK=1 a change that would be made.
    CALLED_BY_ITEMS,
    'ms_changed() { echo "changed $*"; }',
    CALLED_BY_ITEMS,
    'ms_warn() { echo "warning $*"; }',
    CALLED_BY_ITEMS,
    'ms_apply() { [ "$CHECK" = 1 ] || "$@"; }',
    CALLED_BY_ITEMS,
    'ms_installed() { dpkg-query -W -f=\'${Status}\' "$1" 2>/dev/null | grep -q "install ok installed"; }',
    CALLED_BY_ITEMS,
    'ms_missing() { local p; for p in "$@"; do ms_installed "$p" || printf \'%s \' "$p"; done; }',
    // The package index is refreshed when older than a day (or absent).
    CALLED_BY_ITEMS,
    'ms_index_fresh() { [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name \'*Packages*\' -mmin -1440 -print -quit 2>/dev/null)" ]; }',
    CALLED_BY_ITEMS,
    'ms_refresh_index() {',
    '  ms_index_fresh && return 0',
    '  if [ "$CHECK" = 1 ]; then ms_changed "package index is older than a day (would refresh)"; return 0; fi',
    // A fresh file of our own (mktemp): a fixed name in /tmp could be another user's link.
    '  local err; err=$(mktemp)',
    '  apt-get update -qq -o Dpkg::Use-Pty=0 >/dev/null 2>"$err" || { cat "$err" >&2; rm -f "$err"; return 1; }',
    '  if grep -q "^[WE]:" "$err"; then ms_warn "apt-get update: $(grep -m1 "^[WE]:" "$err" | cut -c1-200)"; fi',
    '  rm -f "$err"',
    '  ms_changed "package index refreshed"',
    '}',
    // Installs what is missing. With CHECK=1 it reports what it would install and ends
    // the item there: what follows needs the packages to be checked.
    CALLED_BY_ITEMS,
    'ms_install() {',
    '  local missing; missing=$(ms_missing "$@")',
    '  [ -z "$missing" ] && return 0',
    '  if [ "$CHECK" = 1 ]; then ms_changed "would install ${missing% } and configure it"; exit 0; fi',
    '  ms_refresh_index',
    '  # shellcheck disable=SC2086',
    '  apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $missing >/dev/null',
    '  ms_changed "installed ${missing% }"',
    '}',
    // ms_file PATH MODE OWNER LABEL < content: writes PATH (atomically) when it differs; MS_WROTE=1 when it did (or would).
    '# shellcheck disable=SC2034,SC2317 # MS_WROTE is read by the item after the call (file() onChange)',
    'ms_file() {',
    '  local path=$1 mode=$2 owner=$3 label=$4 tmp',
    '  MS_WROTE=0',
    // PATH has SOURCE's content ("-": stdin), the mode and the owner.
    '  same() { [ -f "$path" ] && cmp -s "$1" "$path" && [ "$(stat -c %a:%U:%G "$path")" = "$mode:${owner%%:*}:${owner#*:}" ]; }',
    // Check mode compares the content as it comes: no temporary file on the host.
    '  if [ "$CHECK" = 1 ]; then',
    '    same - && return 0',
    '    MS_WROTE=1',
    '    if [ -f "$path" ]; then ms_changed "$label differs"; else ms_changed "$label missing"; fi',
    '    return 0',
    '  fi',
    // The content first goes to root's own temporary file (in /tmp: sticky, nobody swaps it).
    '  tmp=$(mktemp)',
    '  cat > "$tmp"',
    '  if same "$tmp"; then rm -f "$tmp"; return 0; fi',
    '  MS_WROTE=1',
    '  local dir=${path%/*} dir_owner dir_mode',
    '  read -r dir_owner dir_mode < <(stat -c "%U %a" "$dir")',
    '  if [ "$dir_owner" = root ] && (( (8#$dir_mode & 8#022) == 0 )); then',
    '    local final; final=$(mktemp "$dir/.metalship-XXXXXX")',
    '    cat "$tmp" > "$final"; rm -f "$tmp"',
    '    chmod "$mode" "$final"; chown "$owner" "$final"',
    '    mv -f "$final" "$path"',
    // A directory another account may change (/etc/redis is redis's): root acts on nothing
    // there; the file's owner writes it (a link there leads only where that account may go).
    '  elif [ "${owner%%:*}" != root ]; then',
    '    # shellcheck disable=SC2016 # the inner script expands its own arguments',
    '    runuser -u "${owner%%:*}" -- bash -c \'umask 077; t=$(mktemp "$1/.metalship-XXXXXX") && cat > "$t" && chgrp "$2" "$t" && chmod "$3" "$t" && mv -f "$t" "$4"\' _ "$dir" "${owner#*:}" "$mode" "$path" < "$tmp"',
    '    rm -f "$tmp"',
    '  else',
    '    rm -f "$tmp"',
    String.raw`    echo "$path: its directory $dir is $dir_owner's (mode $dir_mode), so another account may change it: root writes no file there" >&2`,
    '    return 1',
    '  fi',
    '  ms_changed "$label written"',
    '}',
  );
}

/** metalship's own root-only settings on a host (URLs and secrets it keeps: root's, 755, files 600). */
export const ETC_DIR = '/etc/metalship';

/** Script lines that make ETC_DIR when missing (not in check mode). */
export function ensureEtcDir(): string {
  return sh`if [ ! -d ${ETC_DIR} ]; then ms_apply install -d -m 755 -o root -g root ${ETC_DIR}; fi`;
}

/** Script lines: write content to path when it differs (honours CHECK); runs onChange when it did. */
export function file(
  path: string | Raw,
  content: string,
  opts: { mode?: string; owner?: string; label?: string; onChange?: string } = {},
): string {
  const doc = heredoc(content);
  return script(
    sh`ms_file ${path} ${opts.mode ?? '644'} ${opts.owner ?? 'root:root'} ${opts.label ?? (typeof path === 'string' ? path : 'file')} ${raw(doc.open)}`,
    doc.body,
    opts.onChange ? `if [ "$MS_WROTE" = 1 ]; then ${opts.onChange}; fi` : null,
  ).trimEnd();
}

/** A whole item script: prelude plus body. */
export function itemScript(check: boolean, ...parts: Array<string | false | null | undefined>): string {
  return script(prelude(check), ...parts);
}

/** The results of one item run, parsed from its output. */
export interface ItemOutcome {
  status: 'ok' | 'changed' | 'warning' | 'failed';
  changes: string[];
  warnings: string[];
  detail: string;
}

/** An item's run as the stage reads it: its outcome and what it told about the host. */
export interface ItemReport {
  outcome: ItemOutcome;
  /** The Python the python item found or built (`python <path>`). */
  python: string | null;
  /** Lines for the summary (`note <text>`). */
  notes: string[];
  /** A guarded change was applied (`guard <what>`): a fresh connection must confirm it. */
  guarded: boolean;
}

/** An item as a step: it reports its own failure (exit code and stderr) rather than throwing. */
export function itemStep(item: Item): Step<ItemReport> {
  return reportingStep(`provision ${item.name}`, item.script, (stdout, ending) => {
    const out = keyLines(stdout);
    return {
      outcome: parseItemOutput(ending.code, stdout, ending.stderr),
      python: out.get('python') ?? null,
      notes: out.all('note'),
      guarded: out.all('guard').length > 0,
    };
  });
}

/** An item's pre-check as a step: its refusal (stderr), or '' when it has none. */
export function precheckStep(item: Item & { precheck: string }): Step<string> {
  return reportingStep(`pre-checking ${item.name}`, itemScript(true, item.precheck), (stdout, ending) =>
    ending.code === 0 ? '' : parseItemOutput(ending.code, stdout, ending.stderr).detail,
  );
}

/** Keeps a guarded change, or undoes it. */
export function guardStep(item: Item & { guard: Guard }, action: keyof Guard): Step<void> {
  return plainStep(
    `${action === 'confirm' ? 'confirming' : 'reverting'} the ${item.name} change`,
    item.guard[action],
  );
}

export function parseItemOutput(code: number, stdout: string, stderr: string): ItemOutcome {
  const out = keyLines(stdout);
  const changes = out.all('changed').map((c) => c.trim());
  const warnings = out.all('warning').map((w) => w.trim());
  if (code !== 0) {
    const why = stderr.trim().split('\n').slice(-5).join(' / ') || `exit code ${code}`;
    return { status: 'failed', changes, warnings, detail: why };
  }
  const status = changes.length ? 'changed' : warnings.length ? 'warning' : 'ok';
  return { status, changes, warnings, detail: [...changes, ...warnings.map((w) => `⚠ ${w}`)].join('; ') };
}
