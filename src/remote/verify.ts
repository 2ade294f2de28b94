// Health checks run on a host, and the listing and cleanup of releases.

import type { Layout } from './layout.js';
import { PROBE_USER, pyToolDefinition } from './pytool.js';
import { keyLines, raw, script, sh } from './sh.js';
import { step, type Step } from './step.js';
import { journalOf, STOP_TIMEOUT_SECONDS, SYSTEMD_REFUSED, workerUnitShell } from './units.js';

export interface VerifySettings {
  layout: Layout;
  path: string;
  timeout: number;
  interval: number;
  /** Seconds a worker or scheduler process must run to count as settled; 0: active is enough. */
  stableSeconds: number;
  /** The units are Type=notify (units-ready: notify): right after a restart, active means the new process said it is ready. */
  notify?: boolean;
  /** The units were just restarted (a deploy or rollback): systemd restarting one means it crashed. */
  restarted?: boolean;
  expectStatus: number;
  expectBody: string;
  /** Units checked by name (the scheduler). */
  units: string[];
  /** Also check the worker of the release current points at (its instance of the template). */
  worker?: boolean;
  /** The host serves the api (false: a worker-only host, only its units are checked). */
  api?: boolean;
  /** Also list the releases, once healthy (a deploy's cleanup plans from it: one round trip fewer). */
  list?: boolean;
  /**
   * Says so on file descriptor 7 (`MARK api verified`, see API_VERIFIED) as
   * soon as the api answered, while the units are still checked: a switch's
   * checks, whose script keeps its own output on 7.
   */
  markApi?: boolean;
  /**
   * Script lines run once the api answered, before the units are checked: a
   * rolling switch starts the worker and the scheduler so (the api's check has
   * the host to itself, and a release whose api fails never starts them). The
   * units are then checked only if the api answered.
   */
  beforeUnits?: string;
}

/** The mark a switch's checks print once the api answered (VerifySettings.markApi). */
export const API_VERIFIED = 'api verified';

/** What a health check found on a host. */
export interface HealthOutcome {
  healthy: boolean;
  /** The readiness endpoint's last answer (null on a host without the api). */
  answer: { ok: boolean; attempts: number; seconds: number; status: number; body: string } | null;
  /** The same endpoint through nginx with the site's Host (null: the host has no site of the app, or the socket failed). */
  nginx: { host: string; answer: NonNullable<HealthOutcome['answer']> } | null;
  unitsDown: string[];
  /** systemd's view of each unit given up on, for the error message. */
  unitStates: string[];
  /** What the units check saw on the way (a start waiting behind an earlier run's job, a start tried again). */
  unitNotes: string[];
  /** The services' recent journal lines, when unhealthy. */
  journal: string[];
  /** Why there was nothing to check. */
  problem: string;
  /** The releases, listed once healthy (with VerifySettings.list). */
  listing?: ReleaseListing;
}

/**
 * The path users take: the same check through nginx on the host, with the
 * Host (and, for a TLS site, the SNI name) of the app's site, when the host has
 * the app's site. Another site answering for that name, or a site that does
 * not reach the app, fails it although the slot's socket answers.
 */
function throughNginx(settings: VerifySettings): string {
  const site = settings.layout.nginxSiteEnabled;
  return script(
    sh`if [ "$rc" = 0 ] && [ -e ${site} ]; then`,
    sh`  name=$(awk '$1 == "server_name" { sub(/;$/, "", $2); print $2; exit }' ${site})`,
    // A wildcard name stands for any of its names; a regular expression for none we can write.
    '  case "$name" in ""|_) name=localhost ;; "*."*) name="metalship-verify.${name#*.}" ;; esac',
    sh`  if grep -Eq '^[[:space:]]*listen[[:space:]]+([^;]*:)?443[[:space:];]' ${site}; then target=https://127.0.0.1:443; else target=127.0.0.1:80; fi`,
    `  case "$name" in "~"*|*"*") echo "nginx: the site's first server_name is a pattern, not checked through nginx" ;; *)`,
    '    echo "NGINX_HOST $name"',
    '    nrc=0',
    sh`    out=$(mstool_as ${PROBE_USER} wait-ready "$target" ${settings.path} ${settings.timeout} ${settings.interval} ${settings.expectStatus} ${settings.expectBody} "$name") || { nrc=$?; rc=$nrc; }`,
    '    echo "NGINX $out"; echo "NGINX_RC $nrc" ;;',
    '  esac',
    'fi',
  );
}

/**
 * Polls the serving slot's readiness endpoint until it answers as expected,
 * then checks the units; on trouble, the services' recent journal lines (without
 * uvicorn's access log). It reports, and the caller decides: it exits 0.
 */
export function verifyStep(settings: VerifySettings): Step<HealthOutcome> {
  return step('health check', script(pyToolDefinition(), verifyScript(settings)), (stdout) =>
    parseHealth(settings, stdout),
  );
}

/**
 * The checks as script lines, for a script that defines the Python tool
 * (pyToolDefinition) first: the verify step's, or a switch's once its traffic
 * moved (switchScript's checks).
 */
export function verifyScript(settings: VerifySettings): string {
  const layout = settings.layout;
  const units = settings.units.length > 0 || !!settings.worker;
  // Right after a restart, a notify unit turns active when its new process says it is
  // ready: that is the settling. At any other time (the verify action alone) active
  // says nothing of a process caught in a crash loop, between two restarts: its age does.
  const stableSeconds = settings.notify && settings.restarted ? 0 : settings.stableSeconds;
  return script(
    'rc=0',
    'failed=""',
    // A unit not yet active with no job queued is waited for, up to the timeout.
    units
      ? script(
          'hz=$(getconf CLK_TCK 2>/dev/null || echo 100)',
          // When process $1 started, in clock ticks since the kernel booted ("self": now, as
          // the reading process starts). Both ends of an age from the same per-process
          // clock: a container's own /proc/uptime (lxcfs) would not match it.
          'started_at() {',
          '  local stat f',
          '  stat=$(cat /proc/"$1"/stat 2>/dev/null) || return 1',
          // Fields after the command name, which may hold spaces and parentheses: starttime is the 20th.
          '  read -ra f <<< "${stat##*) }"',
          '  echo "${f[19]}"',
          '}',
          // How long process $1 has run, in hundredths of a second.
          'proc_age() { local a b; a=$(started_at "$1") && b=$(started_at self) && echo $(( (b - a) * 100 / hz )); }',
          SYSTEMD_REFUSED,
          // A unit's queued job, described (for a failure's message).
          'unit_jobs() { local j; j=$(systemctl list-jobs --no-legend "$1" 2>/dev/null | tr -s " " | tr "\\n" " ") || true; echo "${j:-none}"; }',
          // systemd's view of a unit, on one line.
          `unit_state() { systemctl show -p ActiveState -p SubState -p Result -p NRestarts -p ExecMainStatus "$1" 2>/dev/null | tr '\\n' ' '; }`,
          // Settled: active, no job queued, and its process has run units-stable-seconds.
          // A process seen running that exits meanwhile fails it at once, as does, right
          // after the deploy restarted the unit, systemd restarting it: a crash at start
          // would otherwise pass between restarts. (No shortcut for an idle process: one
          // sleeping in a retry is idle too.) Around a restart the switch did not wait
          // for, a unit passes through inactive: a unit that stays down fails at the timeout.
          'settled() {',
          '  local show s sub pid job seen="" age="" restarts k v now_us refused cgroup_retries=0 draining="" stopping_since=""',
          '  while :; do',
          // One systemctl a poll, read in the shell (a poll every 50 ms costs little).
          '    show=$(systemctl show -p Job -p ActiveState -p SubState -p MainPID "$1" 2>/dev/null || true)',
          '    job="" s="" sub="" pid=""',
          '    while IFS="=" read -r k v; do case $k in Job) job=$v ;; ActiveState) s=$v ;; SubState) sub=$v ;; MainPID) pid=$v ;; esac; done <<< "$show"',
          '    if [ -z "$job" ]; then',
          settings.restarted
            ? script(
                // systemd refusing the start (see SYSTEMD_REFUSED), not the app:
                // part of the restart, started again, twice at most.
                '      if [ "$sub" = auto-restart ] && [ "${cgroup_retries:-0}" -lt 2 ] && refused=$(systemd_refused "$1"); then',
                '        cgroup_retries=$(( ${cgroup_retries:-0} + 1 ))',
                '        echo "UNIT_NOTE systemd could not start $1\'s process ($refused): starting it again"',
                '        systemctl reset-failed "$1" 2>/dev/null || true',
                '        systemctl restart --no-block "$1" 2>/dev/null || true',
                '        seen=""',
                '        sleep 0.1',
                '        continue',
                '      fi',
              ).trimEnd()
            : null,
          '      if [ -n "$seen" ] && [ "${pid:-0}" != "$seen" ]; then',
          '        echo "UNIT_STATE $1: its process exited while it was checked, ${age:-0}0 ms after it started (does it crash as it starts?); $(unit_state "$1")"',
          '        return 1',
          '      fi',
          settings.restarted
            ? script(
                '      if [ "$sub" = auto-restart ]; then',
                '        echo "UNIT_STATE $1: its process exited after the restart, and systemd is restarting it (does it crash as it starts?); $(unit_state "$1")"',
                '        return 1',
                '      fi',
              ).trimEnd()
            : null,
          '      if [ "$s" = active ] && [ "${pid:-0}" != 0 ]; then',
          '        seen=$pid',
          sh`        if age=$(proc_age "$pid") && [ "$age" -ge ${stableSeconds * 100} ]; then`,
          // Up long enough; after the restart, systemd must not have restarted it since
          // (a crash once while nobody looked: the restart resets the count).
          settings.restarted
            ? script(
                '          restarts=$(systemctl show -p NRestarts --value "$1" 2>/dev/null || echo 0)',
                '          if [ "${restarts:-0}" != 0 ]; then',
                '            echo "UNIT_STATE $1: its process exited after the restart and systemd restarted it ($restarts time(s)): it crashed as it started; $(unit_state "$1")"',
                '            return 1',
                '          fi',
              ).trimEnd()
            : null,
          '          return 0',
          '        fi',
          '      fi',
          '    fi',
          // Its start waits behind an earlier run of the same unit that keeps stopping
          // (a worker finishing a job: a rollback to the release just left): that run's
          // stop bound is added to the wait, once, after a second of it or at the
          // deadline. A restart's own stop, a moment long, passes unremarked.
          '    if [ -n "$job" ] && [ "$s" = deactivating ]; then',
          '      now_us=${EPOCHREALTIME/[.,]/}',
          '      stopping_since=${stopping_since:-$now_us}',
          '      if [ -z "$draining" ] && { [ $((now_us - stopping_since)) -ge 1000000 ] || [ "$SECONDS" -ge "$units_deadline" ]; }; then',
          '        draining=1',
          sh`        units_deadline=$((units_deadline + ${STOP_TIMEOUT_SECONDS}))`,
          sh`        echo "UNIT_NOTE $1: its earlier run is still stopping (finishing its work, up to ${STOP_TIMEOUT_SECONDS} s) before it starts again"`,
          '      fi',
          '    else',
          '      stopping_since=""',
          '    fi',
          '    if [ "$SECONDS" -ge "$units_deadline" ]; then',
          // What the unit was doing when given up on, so a failure explains itself.
          '      if [ -n "$seen" ]; then',
          sh`        echo "UNIT_STATE $1: running, but for $(( \${age:-0} / 100 )) s only of the ${stableSeconds} s it must stay up (units-stable-seconds) when the check ended; $(unit_state "$1")"`,
          '      elif [ "$(systemctl show -p ActiveState --value "$1" 2>/dev/null)" = deactivating ]; then',
          '        echo "UNIT_STATE $1: its earlier run was still finishing a job when the check ended; $(unit_state "$1")"',
          '      else',
          settings.notify
            ? '        echo "UNIT_STATE $1: not ready (jobs: $(unit_jobs "$1"); with units-ready: notify, systemd waits for its process to send READY=1); $(unit_state "$1")"'
            : '        echo "UNIT_STATE $1: not running (${s:-?}, ${sub:-?}, jobs: $(unit_jobs "$1")); $(unit_state "$1")"',
          '      fi',
          '      return 1',
          '    fi',
          '    sleep 0.05',
          '  done',
          '}',
          // Each unit watched on its own, at once: one crashing while another is waited
          // for is seen when it happens.
          'units_check() {',
          '  local dir down="" i=0 u',
          // verify-timeout to come up, then units-stable-seconds to stay up.
          sh`  units_deadline=$((SECONDS + ${settings.timeout + stableSeconds}))`,
          '  dir=$(mktemp -d)',
          sh`  local units=(${settings.units})`,
          settings.worker ? workerOfCurrent(layout) : null,
          '  for u in "${units[@]}"; do',
          '    i=$((i + 1))',
          '    { if ! settled "$u"; then echo "$u" > "$dir/$i.down"; fi; } > "$dir/$i.out" &',
          '  done',
          '  wait',
          '  for ((u = 1; u <= i; u++)); do cat -- "$dir/$u.out"; if [ -f "$dir/$u.down" ]; then down="$down $(cat -- "$dir/$u.down")"; fi; done',
          '  rm -rf -- "$dir"',
          '  if [ -n "$down" ]; then echo "UNITS_DOWN$down"; fi',
          '}',
          // Its output goes to a file, read once it is done: its lines never mix with the probes'.
          'units_out=$(mktemp)',
        ).trimEnd()
      : null,
    settings.api === false
      ? script(settings.beforeUnits ?? null, units ? 'units_check > "$units_out"' : null).trimEnd() || null
      : script(
          sh`serving=$(cat ${layout.activeSlot} 2>/dev/null || true)`,
          `case "$serving" in blue|green) ;; *) echo "PROBLEM no api slot is serving on this host (nothing deployed yet?)"; ${units ? 'rm -f -- "$units_out"; ' : ''}exit 0;; esac`,
          // The units settle (a worker's restart waits for its tasks) while the probes run.
          units && !settings.beforeUnits ? 'units_check > "$units_out" & units_pid=$!' : null,
          sh`sock=/run/${layout.app}-api-$serving/api.sock`,
          sh`out=$(mstool_as ${PROBE_USER} wait-ready "$sock" ${settings.path} ${settings.timeout} ${settings.interval} ${settings.expectStatus} ${settings.expectBody}) || rc=$?`,
          'echo "RESULT $out"',
          'echo "PROBE_RC $rc"',
          throughNginx(settings),
          settings.markApi
            ? `if [ "$rc" = 0 ]; then { echo "MARK ${API_VERIFIED}" >&7; } 2>/dev/null || true; fi`
            : null,
          settings.beforeUnits
            ? script(
                'if [ "$rc" = 0 ]; then',
                '  :',
                settings.beforeUnits,
                units ? '  units_check > "$units_out"' : null,
                'fi',
              ).trimEnd()
            : units
              ? 'wait "$units_pid" || true'
              : null,
        ),
    units
      ? script(
          'cat -- "$units_out"',
          `failed=$(sed -n 's/^UNITS_DOWN//p' "$units_out")`,
          'rm -f -- "$units_out"',
        ).trimEnd()
      : null,
    settings.list
      ? sh`if [ "$rc" = 0 ] && [ -z "$failed" ]; then echo "LISTING $(mstool releases ${layout.root} | tail -n 1)"; fi`
      : null,
    'if [ "$rc" != 0 ] || [ -n "$failed" ]; then',
    // The units given up on, on their own: under load the api's lines would push theirs out.
    units
      ? sh`  for u in $failed; do journalctl ${journalOf(layout)} -u "$u" -n 20 --no-pager -o short-iso 2>/dev/null | sed 's/^/JOURNAL /' || true; done`
      : null,
    settings.api === false
      ? null
      : sh`  if [ "$rc" != 0 ]; then journalctl ${journalOf(layout)} -u ${layout.units.api('blue')} -u ${layout.units.api('green')} -n 300 --no-pager -o short-iso 2>/dev/null | grep -v 'HTTP/1\.[01]" [0-9]' | tail -n 20 | sed 's/^/JOURNAL /' || true; fi`,
    'fi',
  );
}

/** What the checks printed (verifyScript), read. */
export function parseHealth(settings: Pick<VerifySettings, 'api'>, stdout: string): HealthOutcome {
  const out = keyLines(stdout);
  const unitsDown = (out.get('UNITS_DOWN') ?? '').split(' ').filter(Boolean);
  const problem = out.get('PROBLEM') ?? '';
  const answer =
    settings.api === false || problem
      ? null
      : probeAnswer(out.get('RESULT') ?? '', out.get('PROBE_RC') ?? '');
  // Once the site's name is out, the probe through nginx must answer too.
  const nginxHost = out.get('NGINX_HOST');
  const nginx =
    nginxHost === undefined
      ? null
      : { host: nginxHost, answer: probeAnswer(out.get('NGINX') ?? '', out.get('NGINX_RC') ?? '') };
  return {
    healthy:
      !problem &&
      (answer === null || answer.ok) &&
      (nginx === null || nginx.answer.ok) &&
      unitsDown.length === 0,
    answer,
    nginx,
    unitsDown,
    unitStates: out.all('UNIT_STATE'),
    unitNotes: out.all('UNIT_NOTE'),
    journal: out.all('JOURNAL'),
    problem,
    listing: parseListing(out.get('LISTING')),
  };
}

/**
 * Adds to the `units` array the worker of the release current points at: its
 * instance, or the single worker unit a host keeps until its first switch
 * under worker instances.
 */
function workerOfCurrent(layout: Layout): string {
  const currentId = sh`"$(basename "$(readlink ${layout.current} 2>/dev/null)" 2>/dev/null)"`;
  return script(
    sh`  if [ -f ${layout.unitDir}/${layout.units.legacyWorker} ]; then units+=(${layout.units.legacyWorker})`,
    sh`  else units+=(${raw(workerUnitShell(layout, currentId))}); fi`,
  ).trimEnd();
}

type Answer = NonNullable<HealthOutcome['answer']>;

/**
 * The probe's answer. A probe that printed nothing, something else, or exited
 * non-zero (runuser or python failing) is a failed check, never a pass.
 */
export function probeAnswer(result: string, exitCode: string): Answer {
  const failed = (why: string): Answer => ({ ok: false, attempts: 0, seconds: 0, status: 0, body: why });
  let answer: unknown;
  try {
    answer = JSON.parse(result);
  } catch {
    return failed(`the readiness probe gave no answer (exit ${exitCode || 'unknown'})`);
  }
  const a = answer as Partial<Answer> | null;
  if (typeof a !== 'object' || a === null || typeof a.ok !== 'boolean')
    return failed(`the readiness probe gave no answer (exit ${exitCode || 'unknown'})`);
  const parsed: Answer = {
    ok: a.ok && exitCode === '0',
    attempts: Number(a.attempts) || 0,
    seconds: Number(a.seconds) || 0,
    status: Number(a.status) || 0,
    body: typeof a.body === 'string' ? a.body : '',
  };
  return parsed;
}

export interface ReleaseInfo {
  id: string;
  status: string;
  created: number;
  venv: string;
  revision: string;
  schema_revision: string;
  /** It was current once (a release only built, as the fleet's `<id>-migrate`, never was). */
  served: boolean;
}

export interface ReleaseListing {
  releases: ReleaseInfo[];
  links: Record<string, string>;
  venvs: string[];
}

/** A listing a health check printed; none when unreadable (the cleanup then lists again: never a reason to fail). */
function parseListing(line: string | undefined): ReleaseListing | undefined {
  try {
    const listing = line ? (JSON.parse(line) as ReleaseListing) : undefined;
    return Array.isArray(listing?.releases) &&
      Array.isArray(listing?.venvs) &&
      typeof listing?.links === 'object' &&
      listing.links !== null
      ? listing
      : undefined;
  } catch {
    return undefined;
  }
}

/** The releases on a host, their status and links, and the venvs. */
export function listStep(l: Layout): Step<ReleaseListing> {
  return step('listing releases', script(pyToolDefinition(), sh`mstool releases ${l.root}`), (stdout) => {
    const line = stdout.trim().split('\n').pop() ?? '{}';
    return JSON.parse(line) as ReleaseListing;
  });
}

export const GOOD = new Set(['ready']);

/**
 * Which releases and venvs to remove: keep the newest `keep` good releases,
 * always current and both slots' releases (the rollback target), and the newest
 * failed one for inspection. Failed and bad releases never count toward keep.
 */
export function planCleanup(listing: ReleaseListing, keep: number): { releases: string[]; venvs: string[] } {
  const pinned = new Set(Object.values(listing.links));
  const byNewest = [...listing.releases].sort((a, b) => b.created - a.created || b.id.localeCompare(a.id));
  const keepIds = new Set<string>(pinned);
  for (const r of byNewest.filter((r) => GOOD.has(r.status)).slice(0, keep)) keepIds.add(r.id);
  const newestFailed = byNewest.find((r) => r.status === 'failed');
  if (newestFailed) keepIds.add(newestFailed.id);
  const remove = byNewest.filter((r) => !keepIds.has(r.id)).map((r) => r.id);
  const usedVenvs = new Set(listing.releases.filter((r) => keepIds.has(r.id)).map((r) => r.venv));
  const venvs = listing.venvs.filter((v) => !usedVenvs.has(v));
  return { releases: remove, venvs };
}

/** Removes what the plan names; reads back what it removed, and what it kept (a release whose worker still runs). */
export function cleanupStep(
  layout: Layout,
  plan: { releases: string[]; venvs: string[] },
): Step<{ removed: string[]; kept: string[] }> {
  const outcome = (stdout: string) => {
    const out = keyLines(stdout);
    return { removed: out.all('removed'), kept: out.all('kept') };
  };
  if (plan.releases.length === 0 && plan.venvs.length === 0)
    return step('cleanup', script('echo "nothing to clean up"'), outcome);
  return step(
    'cleanup',
    script(
      // Marked first: a removal cut short (the run stopped, the host rebooted) leaves no "ready" half.
      'kept=0',
      // Not a release whose worker still finishes its jobs (it runs from there): a later cleanup takes it.
      ...plan.releases.map((id) =>
        script(
          sh`case "$(systemctl show -p ActiveState --value ${layout.units.worker(id)} 2>/dev/null)" in`,
          sh`  active|activating|deactivating|reloading) kept=1; echo "kept release ${id}: its worker is still finishing its jobs" ;;`,
          sh`  *) if [ -d ${layout.release(id)}/.metalship ]; then echo removing > ${layout.release(id)}/.metalship/status; fi; rm -rf -- ${layout.release(id)} && echo "removed release ${id}" ;;`,
          'esac',
        ).trimEnd(),
      ),
      // Nor, then, a virtualenv (that worker's may be among them).
      ...plan.venvs.map(
        (v) =>
          sh`if [ "$kept" = 0 ]; then rm -rf -- ${layout.venvs}/${v} && echo "removed virtualenv ${v}"; fi`,
      ),
    ),
    outcome,
  );
}

/**
 * The release a rollback goes to: the named one (must be complete and not
 * failed) or the newest good release older than current that served (a release
 * only built, such as the fleet's `<id>-migrate` made to run migrations, never
 * ran with traffic and is no way back).
 */
export function pickRollbackTarget(
  listing: ReleaseListing,
  requested: string,
): { target: string } | { error: string } {
  const current = listing.links.current ?? '';
  const candidates = [...listing.releases]
    .filter((r) => GOOD.has(r.status) && r.id !== current)
    .sort((a, b) => b.created - a.created || b.id.localeCompare(a.id));
  const list = candidates.map((r) => r.id).join(', ') || 'none';
  if (requested) {
    const r = listing.releases.find((x) => x.id === requested);
    if (!r) return { error: `release ${requested} does not exist; good releases: ${list}` };
    if (r.id === current) return { error: `release ${requested} is already current; good releases: ${list}` };
    if (r.status === 'bad')
      return {
        error: `release ${requested} is marked bad (rolled back from before); good releases: ${list}`,
      };
    if (!GOOD.has(r.status))
      return { error: `release ${requested} is ${r.status}, not a complete release; good releases: ${list}` };
    return { target: r.id };
  }
  const currentInfo = listing.releases.find((r) => r.id === current);
  const older = candidates.filter(
    (r) =>
      r.served !== false &&
      (!currentInfo ||
        r.created < currentInfo.created ||
        (r.created === currentInfo.created && r.id < current)),
  );
  const pick = older[0];
  if (!pick)
    return {
      error: `there is no good release before ${current || 'the current one'} to roll back to; good releases: ${list}`,
    };
  return { target: pick.id };
}
