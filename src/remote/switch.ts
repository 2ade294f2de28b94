// Blue/green switch on one host, in one script: start the release in the idle
// api slot (or reuse the standby if it already runs it), wait until it is ready
// on its own socket, then rename the socket link nginx connects through, point
// `current` at the release and restart the worker and the single scheduler.
// The old slot stays up as a warm standby, so a rollback to it is a rename.

import type { Layout, Slot } from './layout.js';
import { siteConf, upstreamConf } from './nginx.js';
import { PROBE_USER, pyToolDefinition } from './pytool.js';
import { runtimePath } from './runtime.js';
import { ensureFile, keyLines, raw, script, sh, writeFileAtomic, type Raw } from './sh.js';
import { plainStep, step, type Step } from './step.js';
import { parseHealth, verifyScript, type HealthOutcome, type VerifySettings } from './verify.js';
import { journalOf, SYSTEMD_REFUSED, unitsOurs, workerUnitShell } from './units.js';

export interface SwitchSettings {
  layout: Layout;
  releaseId: string;
  units: Record<string, string | null>;
  healthPath: string;
  readyTimeout: number;
  serverName: string;
  worker: boolean;
  scheduler: boolean;
  /** false: a host without the api role (no slot, no nginx site); only current and the followers move. */
  api?: boolean;
  /** The runtime record the units were rendered from: kept with the release once it serves. */
  record: string;
  /**
   * The caller checks the host right after (and switches back on failure): a
   * slot already running the release, unchanged, takes traffic without waiting
   * for its readiness first (a rollback to the warm standby), and the worker
   * and scheduler restart without the switch waiting for them (the check waits
   * until they settle).
   */
  checksFollow?: boolean;
  /**
   * What the release must answer on its own slot's socket before traffic
   * moves (a deploy's verify-path, expect-status and expect-body): a release
   * failing it never serves, and the switch exits PRECHECK_FAILED. Not for a
   * warm standby taking traffic back (a rollback), which the checks follow.
   */
  precheck?: Precheck | null;
  /**
   * Only start (and check) the release in the standby slot, and stop before
   * traffic moves: a rolling switch starts every host first, then moves
   * traffic batch by batch (a later switch finds the slot warm). standDownStep
   * undoes it on a host whose traffic never moved.
   */
  startOnly?: boolean;
  /** Behind a load balancer: the port it reaches the host on, where an old drain rule is cleared. */
  clearDrainPort?: number;
  /**
   * The worker and scheduler units are Type=notify (units-ready: notify): a
   * restart that waited for them would wait for their READY=1, up to systemd's
   * start timeout, after traffic moved. They are restarted without waiting.
   */
  notify?: boolean;
  /**
   * The checks to make once traffic moved (a deploy's and a rollback's verify):
   * run in the same script, started as soon as the worker and the scheduler
   * restart, while the switch's bookkeeping goes on. Their answer is the
   * step's `health`; the caller decides, and switches back.
   */
  checks?: VerifySettings | null;
  /**
   * With checks: the worker and the scheduler start once the api answered its
   * checks, and the other releases' workers stop then (a rolling switch: its
   * next batch waits for this api's checks alone, which so have the host's CPU
   * to themselves). Else they start as soon as traffic moved, beside the checks.
   */
  followersAfterApi?: boolean;
}

/**
 * The followers of a release: its own worker (an instance of the template) and
 * the single scheduler.
 */
function followersOf(settings: SwitchSettings): { worker: string | null; units: string[] } {
  const layout = settings.layout;
  const worker = settings.worker ? layout.units.worker(settings.releaseId) : null;
  const units = [worker, settings.scheduler ? layout.units.scheduler : null].filter((u): u is string => !!u);
  return { worker, units };
}

/**
 * The release's worker started (its instance restarted if it already runs, say
 * after a change of its unit) and the scheduler restarted, counted from zero:
 * systemd keeps the restart count of a unit caught in a crash loop across a
 * restart, and the check after reads any restart as a crash of the release
 * just started. (The callers move the boot links first, so a run cut short
 * after this still boots the right worker; every other release's worker is
 * stopped later, by stopOtherWorkers: it finishes the job it has while the new
 * one already takes jobs. The scheduler is single: its restart stops the old
 * one first.)
 */
function restartFollowers(settings: SwitchSettings, wait: boolean): string {
  const { units } = followersOf(settings);
  return script(
    units.length ? sh`systemctl reset-failed ${units} 2>/dev/null || true` : null,
    units.length
      ? wait
        ? script(
            // Refused by systemd itself (see SYSTEMD_REFUSED; a simple unit's own start never fails here): once more, a second on.
            sh`if ! systemctl restart ${units}; then echo "systemd could not start the worker or the scheduler: starting them again in a second"; sleep 1; systemctl restart ${units}; fi`,
            'echo "MARK worker and scheduler restarted"',
          ).trimEnd()
        : sh`systemctl restart --no-block ${units}`
      : null,
  ).trimEnd();
}

/**
 * Stops, without waiting, every worker but `keep` (null: all): the instances
 * of other releases (also one crash-looping between restarts, or still
 * finishing a job) and the single worker unit of metalship before instances,
 * which goes (its file, and its enabling). Sets units_removed when a unit
 * file went.
 */
function stopOtherWorkers(layout: Layout, keep: string | null): string {
  const legacy = `${layout.unitDir}/${layout.units.legacyWorker}`;
  return script(
    sh`for u in $(systemctl list-units --all --plain --no-legend --type=service ${layout.units.worker('*')} 2>/dev/null | awk '$3 != "inactive" && $3 != "failed" { print $1 }'); do`,
    sh`  if [ "$u" != ${keep ?? ''} ]; then systemctl stop --no-block "$u"; fi`,
    'done',
    sh`if [ -f ${legacy} ]; then systemctl disable --no-reload --quiet ${layout.units.legacyWorker} 2>/dev/null || true; systemctl stop --no-block ${layout.units.legacyWorker} 2>/dev/null || true; rm -f ${legacy}; units_removed=1; fi`,
  ).trimEnd();
}

/**
 * Script lines making the boot start what serves now and no other of the
 * app's units: the links `systemctl enable` makes from the units' [Install]
 * sections (the target in multi-user.target's wants; the serving api slot,
 * the scheduler and this release's worker in the target's), made and removed
 * directly. No daemon to ask (each systemctl call is a round trip to systemd
 * on the switch's path); the boot reads them. A link already right costs no
 * process. `api`: the serving slot, in the script's $slot, boots and the other
 * does not (false: its links stay as they are); `worker` null: no worker at boot.
 */
export function bootLinks(
  layout: Layout,
  opts: { worker: string | null; api?: boolean; scheduler?: boolean; target?: boolean },
): string {
  const wants = `${layout.unitDir}/${layout.units.target}.wants`;
  const link = (unit: string, at: string | Raw) =>
    sh`if [ ! ${at} -ef ${unit} ]; then ln -sfn ${unit} ${at}; fi`;
  const slotLink = (slotVar: string) => raw(`${sh`${wants}`}/${apiUnitOf(layout, slotVar)}`);
  return script(
    sh`if [ ! -d ${wants} ]; then mkdir -p ${wants}; fi`,
    opts.target
      ? script(
          sh`if [ ! -d ${layout.unitDir}/multi-user.target.wants ]; then mkdir -p ${layout.unitDir}/multi-user.target.wants; fi`,
          link(
            `${layout.unitDir}/${layout.units.target}`,
            `${layout.unitDir}/multi-user.target.wants/${layout.units.target}`,
          ),
        ).trimEnd()
      : null,
    opts.api
      ? script(
          link(`${layout.unitDir}/${layout.units.apiTemplate}`, slotLink('$slot')),
          // On boot only the serving slot starts; the standby is a warm spare for this boot only.
          sh`for s in blue green; do if [ "$s" != "$slot" ] && [ -L ${slotLink('$s')} ]; then rm -f -- ${slotLink('$s')}; fi; done`,
        ).trimEnd()
      : null,
    opts.scheduler
      ? link(`${layout.unitDir}/${layout.units.scheduler}`, `${wants}/${layout.units.scheduler}`)
      : null,
    opts.worker ? link(`${layout.unitDir}/${layout.units.workerTemplate}`, `${wants}/${opts.worker}`) : null,
    sh`for f in ${raw(workerUnitShell(layout, '*', `${wants}/`))}; do if [ -L "$f" ] && [ "\${f##*/}" != ${opts.worker ?? ''} ]; then rm -f -- "$f"; fi; done`,
  ).trimEnd();
}

export interface Precheck {
  path: string;
  expectStatus: number;
  expectBody: string;
  timeout: number;
  interval: number;
}

/**
 * Removes the rule by which metalship before 1.1 took a host out of a load
 * balancer's rotation during a rolling switch (a killed run could leave it).
 */
function clearDrainLines(layout: Layout, port: number): string {
  const rule = sh`INPUT ! -i lo -p tcp --dport ${String(port)} --syn -m comment --comment ${'metalship-drain-' + layout.app} -j REJECT --reject-with tcp-reset`;
  return `for t in iptables ip6tables; do if command -v "$t" >/dev/null 2>&1; then while "$t" -w -D ${rule} 2>/dev/null; do :; done; fi; done`;
}

/**
 * Stops, without waiting for it, the api slot a deploy's switch will start the
 * new release in: the standby, which serves nothing. uvicorn takes a few
 * tenths of a second to stop even when idle; stopped while the release is
 * built and migrated, the switch's restart is a start. Only when the link
 * nginx connects through points at the active slot's socket: a slot that may
 * still take traffic is never touched. A run that fails before its switch
 * leaves the standby stopped (a rollback to it then starts it first), as a
 * release failing its checks on that slot always did.
 */
export function stopStandbyLines(layout: Layout): string {
  return script(
    sh`active=$(cat ${layout.activeSlot} 2>/dev/null || true)`,
    'case "$active" in blue) standby=green ;; green) standby=blue ;; *) standby="" ;; esac',
    sh`if [ -n "$standby" ] && [ "$(readlink ${layout.apiLink} 2>/dev/null)" = /run/${layout.app}-api-"$active"/api.sock ]; then`,
    sh`  systemctl stop --no-block ${raw(apiUnitOf(layout, '$standby'))} 2>/dev/null || true`,
    'fi',
  ).trimEnd();
}

/** The switch's exit code when the release failed its precheck (nothing moved). */
export const PRECHECK_FAILED = 3;

/**
 * A shell function renaming a fresh link over the old one (rename(2) by `mv
 * -T`: never a moment without the link) and reading it back, with no
 * interpreter to start: `swap_link TARGET PATH`. `ln` only ever creates the
 * fresh link (replacing a link in place is what differs between coreutils
 * flavours). Only for links in root's own directories (slots, the socket
 * link, current, venv).
 */
const SWAP_LINK = [
  'swap_link() {',
  '  local tmp="$2.tmp-$$"',
  '  rm -f -- "$tmp"',
  '  ln -s -- "$1" "$tmp"',
  '  mv -Tf -- "$tmp" "$2"',
  '  if [ "$(readlink -- "$2")" != "$1" ]; then echo "link $2 does not point at $1 after the switch" >&2; return 1; fi',
  '}',
].join('\n');

/**
 * `nginx_running`: whether nginx runs, read from its pid file and the process
 * it names, root's and called nginx (no process started: this is on the
 * switch's path), else asked of systemd (a pid file elsewhere than Debian's
 * and Ubuntu's, or stale: systemd removes it when nginx dies).
 */
const NGINX_RUNNING = [
  'nginx_running() {',
  '  local pid="" comm=""',
  '  if read -r pid 2>/dev/null < /run/nginx.pid && [ -n "$pid" ] && [ -O "/proc/$pid" ] && read -r comm 2>/dev/null < "/proc/$pid/comm" && [ "$comm" = nginx ]; then return 0; fi',
  '  systemctl is-active --quiet nginx',
  '}',
].join('\n');

/**
 * Script lines run once the release serves: its record becomes what it served
 * with, and it is marked as having served (a rollback goes only to such a one).
 */
function servedLines(settings: SwitchSettings): string {
  const meta = `${settings.layout.release(settings.releaseId)}/.metalship`;
  return script(
    writeFileAtomic(runtimePath(settings.layout, settings.releaseId), settings.record),
    sh`date -u +%FT%TZ > ${meta}/served`,
  ).trimEnd();
}

/** The api unit of the slot held in the shell variable `$slot`. */
function apiUnitOf(l: Layout, slotVar: string): string {
  return `${sh`${l.app}`}-api@"${slotVar}".service`;
}

export function switchScript(settings: SwitchSettings): string {
  const layout = settings.layout;
  const rel = layout.release(settings.releaseId);
  const entries = Object.entries(settings.units);
  const unitLines = [unitsOurs(Object.keys(settings.units))].concat(
    entries.flatMap(([name, content]) =>
      content === null
        ? []
        : [
            ensureFile(`${layout.unitDir}/${name}`, content, {
              mode: '644',
              label: `unit ${name}`,
              onChange: 'units_changed=1',
            }),
          ],
    ),
  );
  // Units the release runs without (say no worker) go once it serves: until
  // then the serving release keeps them.
  const removals = (flag: string) =>
    entries
      .filter(([, content]) => content === null)
      .map(
        ([name]) =>
          sh`if [ -f ${layout.unitDir}/${name} ]; then systemctl disable --now ${name} 2>/dev/null || true; rm -f ${layout.unitDir}/${name}; ${raw(flag)}=1; fi`,
      );
  const written = entries.filter(([, content]) => content !== null).map(([name]) => name);
  const saved = `${layout.state}/units-before`;
  const api = raw(apiUnitOf(layout, '$slot'));
  if (settings.api === false)
    return followersOnlyScript(settings, [...unitLines, ...removals('units_changed')]);
  return script(
    pyToolDefinition(),
    SWAP_LINK,
    NGINX_RUNNING,
    SYSTEMD_REFUSED,
    sh`status=$(cat ${rel}/.metalship/status 2>/dev/null || echo missing)`,
    sh`if [ "$status" != ready ] && [ "$status" != bad ]; then echo "release ${settings.releaseId} is $status, not a complete release: refusing to switch to it" >&2; exit 1; fi`,
    'command -v nginx >/dev/null 2>&1 || { echo "nginx is not installed: run the provision action first" >&2; exit 1; }',
    // The serving slot keeps serving; the release goes to the other one, unless the serving one already runs it.
    sh`active=$(cat ${layout.activeSlot} 2>/dev/null || true)`,
    'case "$active" in blue) idle=green ;; green) idle=blue ;; *) active=""; idle=blue ;; esac',
    sh`slot_release() { basename "$(readlink ${layout.slots}/"$1" 2>/dev/null)" 2>/dev/null || true; }`,
    sh`if [ -n "$active" ] && [ "$(slot_release "$active")" = ${settings.releaseId} ] && systemctl is-active --quiet ${raw(apiUnitOf(layout, '$active'))}; then slot=$active; else slot=$idle; fi`,
    'echo "SLOT $slot"',
    'units_changed=0',
    // The unit files as they were: a release that never takes traffic leaves them so (see restore_units).
    // In root's own state directory (checked at the lock), in place of the last run's.
    sh`units_saved=${saved}; rm -rf -- "$units_saved"; mkdir -m 700 -- "$units_saved"`,
    sh`for u in ${written}; do if [ -f ${layout.unitDir}/"$u" ]; then cp -p -- ${layout.unitDir}/"$u" "$units_saved/"; fi; done`,
    sh`printf '%s\n' ${written} > "$units_saved/.written"`,
    restoreUnits(layout),
    ...unitLines,
    'if [ "$units_changed" = 1 ]; then systemctl daemon-reload; fi',
    // A change an earlier run wrote but did not get nginx to load (it stopped
    // before the switch, say a first release that never became ready) is loaded now.
    sh`nginx_changed=0; if [ -e ${layout.nginxReloadPending} ]; then nginx_changed=1; fi`,
    'site_new=0',
    sh`if [ ! -e ${layout.nginxSite} ]; then`,
    '  site_new=1',
    ensureFile(layout.nginxSite, siteConf(layout, { serverName: settings.serverName, tls: null }), {
      mode: '644',
      label: 'nginx site',
      onChange: sh`nginx_changed=1; touch ${layout.nginxReloadPending}`,
    }),
    sh`  ln -sfn ${layout.nginxSite} ${layout.nginxSiteEnabled}`,
    settings.serverName === '_' ? sh`  rm -f /etc/nginx/sites-enabled/default` : null,
    'fi',
    ensureFile(layout.nginxUpstream, upstreamConf(layout), {
      mode: '644',
      label: 'nginx upstream',
      onChange: sh`nginx_changed=1; touch ${layout.nginxReloadPending}`,
    }),
    // A configuration nginx refuses (say a second default_server) fails the switch before anything moves.
    'if [ "$nginx_changed" = 1 ] && ! nginx_errors=$(nginx -t 2>&1); then',
    sh`  if [ "$site_new" = 1 ]; then rm -f ${layout.nginxSite} ${layout.nginxSiteEnabled}; fi`,
    '  echo "nginx refuses the configuration for this app: $nginx_errors" >&2',
    '  echo "(with several apps on one server, give each its own server-name)" >&2',
    '  restore_units',
    '  exit 1',
    'fi',
    'echo "MARK units and nginx configuration in place"',
    // Start the release beside the serving one (unless the slot already runs it, unchanged).
    'was=$(slot_release "$slot")',
    sh`if [ "$was" != ${settings.releaseId} ]; then swap_link ${rel} ${layout.slots}/"$slot"; fi`,
    sh`sock=/run/${layout.app}-api-"$slot"/api.sock`,
    'warm=0',
    sh`if [ "$units_changed" = 1 ] || [ "$was" != ${settings.releaseId} ] || ! systemctl is-active --quiet ${api}; then`,
    sh`  echo "starting ${settings.releaseId} in the $slot slot"`,
    // A start refused outright ("unavailable resources": seen on systemd 257 when the
    // slot's previous cgroup is still being torn down) is tried once more, a second on.
    sh`  if ! systemctl restart ${api}; then echo "systemd could not start the $slot slot: starting it again in a second"; sleep 1; systemctl restart ${api}; fi`,
    settings.checksFollow
      ? sh`elif [ -S "$sock" ]; then
  warm=1
  echo "the $slot slot already runs ${settings.releaseId} (a warm standby): traffic moves to it now, its checks follow"`
      : null,
    'else',
    sh`  echo "the $slot slot already runs ${settings.releaseId}"`,
    'fi',
    'if [ "$warm" = 0 ]; then',
    sh`  echo "waiting for ${settings.releaseId} to answer ${settings.healthPath} on the $slot slot's socket"`,
    // A second at a time, looking at the unit in between: a process that exits
    // (an app that cannot import, a bad uvicorn flag) fails the switch at once,
    // not after the whole ready-timeout.
    sh`  restarts=$(systemctl show -p NRestarts --value ${api} 2>/dev/null || echo 0)`,
    sh`  deadline=$((SECONDS + ${settings.readyTimeout})); why=''`,
    '  while :; do',
    sh`    if ready=$(mstool_as ${PROBE_USER} wait-ready "$sock" ${settings.healthPath} 1 0.05 200 ''); then break; fi`,
    sh`    sub=$(systemctl show -p SubState --value ${api} 2>/dev/null || true)`,
    // systemd refusing the start (see SYSTEMD_REFUSED), not the app: started again, twice at most.
    sh`    if [ "$sub" = auto-restart ] && [ "\${cgroup_retries:-0}" -lt 2 ] && refused=$(systemd_refused ${api}); then`,
    '      cgroup_retries=$(( ${cgroup_retries:-0} + 1 ))',
    sh`      echo "systemd could not start the $slot slot's process ($refused): starting it again"`,
    sh`      systemctl restart ${api} || true`,
    sh`      restarts=$(systemctl show -p NRestarts --value ${api} 2>/dev/null || echo 0)`,
    '      continue',
    '    fi',
    sh`    case "$sub" in auto-restart|failed|dead|exited) why="its process exited ($sub)" ;; esac`,
    sh`    if [ -z "$why" ] && [ "$(systemctl show -p NRestarts --value ${api} 2>/dev/null || echo 0)" != "$restarts" ]; then why='its process exited and was restarted'; fi`,
    sh`    if [ -z "$why" ] && [ "$SECONDS" -ge "$deadline" ]; then why=${`it did not answer within ${settings.readyTimeout} s`}; fi`,
    '    if [ -n "$why" ]; then',
    '      echo "$ready" >&2',
    sh`      journalctl ${journalOf(layout)} -u ${api} -n 30 --no-pager -o cat >&2 || true`,
    sh`      systemctl stop ${api} || true`,
    '      restore_units',
    sh`      echo "release ${settings.releaseId} did not become ready in the $slot slot: $why; traffic stays on the serving release" >&2`,
    '      exit 1',
    '    fi',
    '  done',
    '  echo "READY $ready"',
    'fi',
    settings.precheck ? precheckLines(settings.precheck, settings.releaseId, api, layout) : null,
    // Started and checked, not moved: the unit files as they were stay saved for standDownStep.
    settings.startOnly
      ? script(
          'if [ "$units_changed" != 1 ]; then rm -rf -- "$units_saved"; fi',
          'echo "STARTED"',
          'exit 0',
        ).trimEnd()
      : null,
    // Traffic moves only now, by renaming the socket link nginx connects through:
    // requests already on the old slot finish there, new ones reach the new slot.
    sh`prev=$(readlink ${layout.current} 2>/dev/null || true); prev=\${prev##*/}`,
    sh`swap_link "$sock" ${layout.apiLink}`,
    'echo "MARK traffic moved to the $slot slot"',
    // Printed as soon as traffic moved: a switch that fails from here on (its
    // checks timing out, the connection lost) did switch, and is switched back.
    'echo "PREVIOUS $prev"',
    sh`echo "$slot" > ${layout.activeSlot}`,
    sh`swap_link ${rel} ${layout.current}`,
    sh`swap_link "$(readlink ${rel}/.venv)" ${layout.venvLink}`,
    'rm -rf -- "$units_saved"',
    settings.clearDrainPort ? clearDrainLines(layout, settings.clearDrainPort) : null,
    // nginx before the followers: a restart that waits (the switch action's) must not hold it back.
    'if ! nginx_running; then nginx -t -q && systemctl start nginx;',
    'elif [ "$nginx_changed" = 1 ]; then systemctl reload nginx; fi',
    sh`rm -f ${layout.nginxReloadPending}`,
    // The worker and the scheduler run from current: restarted as soon as it moved
    // (the check after waits for them; the bookkeeping below runs meanwhile).
    bootLinks(layout, {
      worker: followersOf(settings).worker,
      api: true,
      scheduler: settings.scheduler,
      target: true,
    }),
    ...(settings.checks && settings.followersAfterApi
      ? [checksStart(settings, followersLines(settings)), servedLines(settings)]
      : [
          restartFollowers(settings, !settings.checksFollow && !settings.notify),
          checksStart(settings),
          servedLines(settings),
          stopOtherWorkers(layout, followersOf(settings).worker),
        ]),
    ...removals('units_removed'),
    'if [ "${units_removed:-0}" = 1 ]; then systemctl daemon-reload; fi',
    sh`printf '%s\n' "$(date -u +%FT%TZ) switched to ${settings.releaseId} ($slot slot) from \${prev:-nothing}" >> ${layout.history}`,
    checksEnd(settings),
  );
}

/**
 * The followers' start once the api answered (SwitchSettings.followersAfterApi),
 * run by the checks: the release's worker and the scheduler restart, then every
 * other worker stops (it finishes its job while the new one takes jobs).
 */
function followersLines(settings: SwitchSettings): string {
  return script(
    restartFollowers(settings, false),
    followersOf(settings).units.length
      ? `{ echo "MARK worker and scheduler restarted" >&7; } 2>/dev/null || true`
      : null,
    stopOtherWorkers(settings.layout, followersOf(settings).worker),
    // The legacy worker unit's file went: systemd forgets it.
    'if [ "${units_removed:-0}" = 1 ]; then systemctl daemon-reload; fi',
  ).trimEnd();
}

/** The prefix of the checks' lines in a switch's output. */
const CHECK_PREFIX = 'VERIFY';

/**
 * Starts the checks (settings.checks) in the background, into a file of
 * root's: they wait for the followers just restarted while the rest of the
 * switch runs.
 */
function checksStart(settings: SwitchSettings, beforeUnits?: string): string | null {
  if (!settings.checks) return null;
  return script(
    // A function whose body is a subshell: the checks' variables stay theirs.
    `run_checks() (\n${verifyScript({ ...settings.checks, markApi: true, beforeUnits })}\n)`,
    'checks_out=$(mktemp)',
    // Their lines go to a file, read at the end; their mark (the api answered) goes out at once, on 7.
    'run_checks 7>&1 > "$checks_out" 2>&1 &',
    'checks_pid=$!',
  ).trimEnd();
}

/** Waits for the checks and prints what they found, each line prefixed. */
function checksEnd(settings: SwitchSettings): string | null {
  if (!settings.checks) return null;
  return script(
    'checks_rc=0; wait "$checks_pid" || checks_rc=$?',
    `sed 's/^/${CHECK_PREFIX} /' "$checks_out"`,
    'rm -f -- "$checks_out"',
    'echo "CHECKS_EXIT $checks_rc"',
  ).trimEnd();
}

/**
 * `restore_units`: puts back the unit files this switch changed, as saved in
 * $units_saved, when the release it started does not take traffic: the slot
 * still serving, and its next start, keep the settings they had.
 */
function restoreUnits(layout: Layout): string {
  return script(
    // Called on failure paths only (shellcheck takes its body for unreachable).
    '# shellcheck disable=SC2317',
    'restore_units() {',
    '  if [ "$units_changed" != 1 ]; then rm -rf -- "$units_saved"; return 0; fi',
    // The names this switch wrote, listed by it (our own unit names).
    '  while IFS= read -r u; do',
    sh`    if [ -f "$units_saved/$u" ]; then cp -p -- "$units_saved/$u" ${layout.unitDir}/"$u.metalship-new" && mv -f -- ${layout.unitDir}/"$u.metalship-new" ${layout.unitDir}/"$u"; else rm -f -- ${layout.unitDir}/"$u"; fi`,
    '  done < "$units_saved/.written"',
    '  rm -rf -- "$units_saved"',
    '  systemctl daemon-reload',
    '  echo "the unit files are back as they were before this switch"',
    '}',
  ).trimEnd();
}

/**
 * The deploy's checks on the started slot's own socket, before the rename: a
 * release failing them stops, the unit files go back, and nothing moved (so a
 * fleet needs no drain: no host ever serves a release that fails them).
 */
function precheckLines(p: Precheck, releaseId: string, api: Raw, layout: Layout): string {
  return script(
    'if [ "$warm" = 0 ]; then',
    sh`  echo "checking ${p.path} on the $slot slot's socket before it takes traffic"`,
    sh`  if ! checked=$(mstool_as ${PROBE_USER} wait-ready "$sock" ${p.path} ${p.timeout} ${p.interval} ${p.expectStatus} ${p.expectBody}); then`,
    sh`    journalctl ${journalOf(layout)} -u ${api} -n 30 --no-pager -o cat 2>/dev/null | grep -v 'HTTP/1\.[01]" [0-9]' | sed 's/^/JOURNAL /' || true`,
    // Never the serving slot (a switch to the release it already runs).
    sh`    if [ "$slot" != "$active" ]; then systemctl stop ${api} || true; fi`,
    '    restore_units',
    '    echo "PRECHECK $checked" >&2',
    sh`    echo "release ${releaseId} failed its checks on the $slot slot's socket, before taking traffic: traffic stays on the serving release" >&2`,
    sh`    exit ${String(PRECHECK_FAILED)}`,
    '  fi',
    '  echo "CHECKED $checked"',
    'fi',
  ).trimEnd();
}

/**
 * Undoes a switch that only started the release (startOnly) on a host whose
 * traffic never moved to it: the slot that runs it stops (never the serving
 * one), and the unit files go back as they were.
 */
export function standDownStep(layout: Layout, releaseId: string): Step<void> {
  return plainStep(
    `stopping ${releaseId} in the standby slot (it never took traffic)`,
    script(
      sh`active=$(cat ${layout.activeSlot} 2>/dev/null || true)`,
      'for s in blue green; do',
      sh`  if [ "$s" != "$active" ] && [ "$(basename "$(readlink ${layout.slots}/"$s" 2>/dev/null)" 2>/dev/null)" = ${releaseId} ]; then systemctl stop ${raw(apiUnitOf(layout, '$s'))} || true; fi`,
      'done',
      sh`units_saved=${`${layout.state}/units-before`}; units_changed=1`,
      restoreUnits(layout),
      'if [ -f "$units_saved/.written" ]; then restore_units; fi',
    ),
  );
}

export interface Switched {
  /** The slot now serving (null: a host without the api role). */
  slot: Slot | null;
  /** The release current pointed at before ('' on a first deploy). */
  previous: string;
  /** What the checks found once traffic moved (null: none were asked for). */
  health: HealthOutcome | null;
}

/** What the checks in a switch found: checks that did not end well (or at all) are unhealthy, never a pass. */
function checksFound(checks: VerifySettings, out: ReturnType<typeof keyLines>): HealthOutcome {
  const health = parseHealth(checks, out.all(CHECK_PREFIX).join('\n'));
  const exit = out.get('CHECKS_EXIT')?.trim();
  if (exit === '0') return health;
  return {
    ...health,
    healthy: false,
    problem: health.problem || `the checks stopped before their end (exit ${exit ?? 'unknown'})`,
  };
}

/** The switch as a step: the slot it serves from, the release it left, and its checks' findings. */
export function switchStep(settings: SwitchSettings): Step<Switched> {
  const what = `switching to ${settings.releaseId}${settings.checks ? ', then checking it' : ''}`;
  return step(what, switchScript(settings), (stdout) => {
    const out = keyLines(stdout);
    const slot = out.get('SLOT');
    return {
      slot: slot === 'blue' || slot === 'green' ? slot : null,
      previous: out.get('PREVIOUS')?.trim() ?? '',
      health: settings.checks ? checksFound(settings.checks, out) : null,
    };
  });
}

/** The switch on a host without the api role: current, the venv link, and the worker or scheduler. */
function followersOnlyScript(settings: SwitchSettings, unitLines: string[]): string {
  const layout = settings.layout;
  const rel = layout.release(settings.releaseId);
  return script(
    pyToolDefinition(),
    sh`status=$(cat ${rel}/.metalship/status 2>/dev/null || echo missing)`,
    sh`if [ "$status" != ready ] && [ "$status" != bad ]; then echo "release ${settings.releaseId} is $status, not a complete release: refusing to switch to it" >&2; exit 1; fi`,
    'echo "SLOT none"',
    'units_changed=0',
    ...unitLines,
    'if [ "$units_changed" = 1 ]; then systemctl daemon-reload; fi',
    // an api that ran here before the host lost the role stops
    sh`systemctl disable --now --quiet ${layout.units.api('blue')} ${layout.units.api('green')} 2>/dev/null || true`,
    sh`prev=$(basename "$(readlink ${layout.current} 2>/dev/null)" 2>/dev/null || true)`,
    sh`mstool link ${rel} ${layout.current}`,
    // As soon as current moved (see the api switch).
    'echo "PREVIOUS $prev"',
    sh`mstool link "$(readlink ${rel}/.venv)" ${layout.venvLink}`,
    servedLines(settings),
    bootLinks(layout, { worker: followersOf(settings).worker, scheduler: settings.scheduler, target: true }),
    restartFollowers(settings, !settings.checksFollow && !settings.notify),
    checksStart(settings),
    stopOtherWorkers(layout, followersOf(settings).worker),
    'if [ "${units_removed:-0}" = 1 ]; then systemctl daemon-reload; fi',
    sh`printf '%s\n' "$(date -u +%FT%TZ) switched to ${settings.releaseId} (no api here) from \${prev:-nothing}" >> ${layout.history}`,
    checksEnd(settings),
  );
}

/**
 * The uvicorn flags a release's uvicorn accepts, recorded at release time:
 * --timeout-graceful-shutdown (0.21+) and --no-server-header (0.14+; before
 * it uvicorn always names itself, which nginx hides from clients anyway). The
 * venv's interpreter runs as the app user: its packages' code (.pth files)
 * never runs as root.
 */
export const UVICORN_FLAGS: [option: string, flag: string][] = [
  ['timeout_graceful_shutdown', '--timeout-graceful-shutdown 30'],
  ['server_header', '--no-server-header'],
];

export function uvicornFlagsScript(rel: string, user: string, venv: string | Raw): string {
  const probe = `import importlib.util, os
s = importlib.util.find_spec("uvicorn")
src = open(os.path.join(os.path.dirname(s.origin), "config.py")).read() if s else ""
print(" ".join(f for o, f in ${JSON.stringify(UVICORN_FLAGS)} if o in src))`;
  // A sealed venv never changes: its answer is kept in it (root's, beside the
  // completion mark) and read by every later release of the same venv.
  const kept = sh`${venv}/.metalship-uvicorn.env`;
  return script(
    sh`if [ -f ${raw(kept)} ] && [ ! -L ${raw(kept)} ] && [ "$(stat -c %u -- ${raw(kept)})" = 0 ]; then`,
    sh`  cp -- ${raw(kept)} ${rel}/.metalship/uvicorn.env`,
    'else',
    sh`  flags=$(runuser -u ${user} -- ${rel}/.venv/bin/python -I -c ${probe} 2>/dev/null) || flags=''`,
    sh`  printf 'METALSHIP_UVICORN_FLAGS=%s\\n' "$flags" > ${rel}/.metalship/uvicorn.env`,
    sh`  if [ -f ${venv}/.metalship-complete ]; then cp -- ${rel}/.metalship/uvicorn.env ${raw(kept)}.tmp && mv -f -- ${raw(kept)}.tmp ${raw(kept)}; fi`,
    'fi',
  );
}

/**
 * Takes the app out of service on a host where a first release failed: nothing
 * served before it, so nothing serves after. Its units stop, and current, the
 * socket link nginx connects through and the serving slot go: nginx answers 502
 * as before the deploy, and the next deploy starts as a first one.
 */
export function unserveStep(layout: Layout): Step<void> {
  const units = [
    layout.units.api('blue'),
    layout.units.api('green'),
    layout.units.legacyWorker,
    layout.units.scheduler,
  ];
  return plainStep(
    'taking the failed first release out of service',
    script(
      sh`was=$(basename "$(readlink ${layout.current} 2>/dev/null)" 2>/dev/null || true)`,
      sh`systemctl disable --now --quiet ${layout.units.target} ${units} 2>/dev/null || true`,
      sh`systemctl stop ${layout.units.worker('*')} 2>/dev/null || true`,
      bootLinks(layout, { worker: null }),
      sh`rm -f ${layout.apiLink} ${layout.activeSlot} ${layout.current} ${layout.venvLink}`,
      sh`printf '%s\n' "$(date -u +%FT%TZ) stopped serving \${was:-nothing}: it failed and nothing served before it" >> ${layout.history}`,
    ),
  );
}
