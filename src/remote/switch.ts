// Blue/green switch on one host, in one script: start the release in the idle
// api slot (or reuse the standby if it already runs it), wait until it is ready
// on its own socket, then rename the socket link nginx connects through, point
// `current` at the release and restart the worker and the single scheduler.
// The old slot stays up as a warm standby, so a rollback to it is a rename.

import type { Layout } from './layout.js';
import { siteConf, upstreamConf } from './nginx.js';
import { PROBE_USER, pyToolDefinition } from './pytool.js';
import { ensureFile, raw, script, sh } from './sh.js';

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
}

/** The api unit of the slot held in the shell variable `$slot`. */
function apiUnitOf(l: Layout, slotVar: string): string {
  return `${sh`${l.app}`}-api@"${slotVar}".service`;
}

export function switchScript(s: SwitchSettings): string {
  const l = s.layout;
  const rel = l.release(s.releaseId);
  const unitLines = Object.entries(s.units).map(([name, content]) =>
    content === null
      ? sh`if [ -f ${l.unitDir}/${name} ]; then systemctl disable --now ${name} 2>/dev/null || true; rm -f ${l.unitDir}/${name}; units_changed=1; fi`
      : ensureFile(`${l.unitDir}/${name}`, content, {
          mode: '644',
          label: `unit ${name}`,
          onChange: 'units_changed=1',
        }),
  );
  const followers = [s.worker ? l.units.worker : null, s.scheduler ? l.units.scheduler : null].filter(
    (u): u is string => !!u,
  );
  const api = raw(apiUnitOf(l, '$slot'));
  const standbyApi = raw(apiUnitOf(l, '$standby'));
  if (s.api === false) return followersOnlyScript(s, unitLines, followers);
  return script(
    pyToolDefinition(),
    sh`status=$(cat ${rel}/.metalship/status 2>/dev/null || echo missing)`,
    sh`if [ "$status" != ready ] && [ "$status" != bad ]; then echo "release ${s.releaseId} is $status, not a complete release: refusing to switch to it" >&2; exit 1; fi`,
    'command -v nginx >/dev/null 2>&1 || { echo "nginx is not installed: run the provision action first" >&2; exit 1; }',
    // The serving slot keeps serving; the release goes to the other one, unless the serving one already runs it.
    sh`active=$(cat ${l.activeSlot} 2>/dev/null || true)`,
    'case "$active" in blue) idle=green ;; green) idle=blue ;; *) active=""; idle=blue ;; esac',
    sh`slot_release() { basename "$(readlink ${l.slots}/"$1" 2>/dev/null)" 2>/dev/null || true; }`,
    sh`if [ -n "$active" ] && [ "$(slot_release "$active")" = ${s.releaseId} ] && systemctl is-active --quiet ${raw(apiUnitOf(l, '$active'))}; then slot=$active; else slot=$idle; fi`,
    'if [ "$slot" = blue ]; then standby=green; else standby=blue; fi',
    'echo "SLOT $slot"',
    'units_changed=0',
    ...unitLines,
    'if [ "$units_changed" = 1 ]; then systemctl daemon-reload; fi',
    'nginx_changed=0',
    'site_new=0',
    sh`if [ ! -e ${l.nginxSite} ]; then`,
    '  site_new=1',
    ensureFile(l.nginxSite, siteConf(l, { serverName: s.serverName, tls: null }), {
      mode: '644',
      label: 'nginx site',
      onChange: 'nginx_changed=1',
    }),
    sh`  ln -sfn ${l.nginxSite} ${l.nginxSiteEnabled}`,
    s.serverName === '_' ? sh`  rm -f /etc/nginx/sites-enabled/default` : null,
    'fi',
    ensureFile(l.nginxUpstream, upstreamConf(l), {
      mode: '644',
      label: 'nginx upstream',
      onChange: 'nginx_changed=1',
    }),
    // A configuration nginx refuses (say a second default_server) fails the switch before anything moves.
    'if [ "$nginx_changed" = 1 ] && ! nginx_errors=$(nginx -t 2>&1); then',
    sh`  if [ "$site_new" = 1 ]; then rm -f ${l.nginxSite} ${l.nginxSiteEnabled}; fi`,
    '  echo "nginx refuses the configuration for this app: $nginx_errors" >&2',
    '  echo "(with several apps on one server, give each its own server-name)" >&2',
    '  exit 1',
    'fi',
    // Start the release beside the serving one (unless the slot already runs it, unchanged).
    'was=$(slot_release "$slot")',
    sh`mstool link ${rel} ${l.slots}/"$slot"`,
    sh`if [ "$units_changed" = 1 ] || [ "$was" != ${s.releaseId} ] || ! systemctl is-active --quiet ${api}; then`,
    sh`  echo "starting ${s.releaseId} in the $slot slot"`,
    sh`  systemctl restart ${api}`,
    'else',
    sh`  echo "the $slot slot already runs ${s.releaseId}"`,
    'fi',
    sh`sock=/run/${l.app}-api-"$slot"/api.sock`,
    sh`if ! ready=$(mstool_as ${PROBE_USER} wait-ready "$sock" ${s.healthPath} ${s.readyTimeout} 0.1 200 ''); then`,
    '  echo "$ready" >&2',
    sh`  journalctl -u ${api} -n 30 --no-pager -o cat >&2 || true`,
    sh`  systemctl stop ${api} || true`,
    sh`  echo "release ${s.releaseId} did not become ready in the $slot slot within ${s.readyTimeout} s; traffic stays on the serving release" >&2`,
    '  exit 1',
    'fi',
    'echo "READY $ready"',
    // Traffic moves only now, by renaming the socket link nginx connects through:
    // requests already on the old slot finish there, new ones reach the new slot.
    sh`mstool link "$sock" ${l.apiLink}`,
    sh`echo "$slot" > ${l.activeSlot}`,
    'if ! systemctl is-active --quiet nginx; then nginx -t -q && systemctl start nginx;',
    'elif [ "$nginx_changed" = 1 ]; then systemctl reload nginx; fi',
    sh`prev=$(basename "$(readlink ${l.current} 2>/dev/null)" 2>/dev/null || true)`,
    sh`mstool link ${rel} ${l.current}`,
    sh`mstool link "$(readlink ${rel}/.venv)" ${l.venvLink}`,
    'echo "PREVIOUS $prev"',
    // On boot only the serving slot starts; the standby is a warm spare for this boot only.
    sh`systemctl enable --quiet ${l.units.target} ${api} ${followers}`,
    sh`systemctl disable --quiet ${standbyApi} 2>/dev/null || true`,
    followers.length ? sh`systemctl restart ${followers}` : null,
    sh`printf '%s\n' "$(date -u +%FT%TZ) switched to ${s.releaseId} ($slot slot) from \${prev:-nothing}" >> ${l.history}`,
  );
}

/** The switch on a host without the api role: current, the venv link, and the worker or scheduler. */
function followersOnlyScript(s: SwitchSettings, unitLines: string[], followers: string[]): string {
  const l = s.layout;
  const rel = l.release(s.releaseId);
  return script(
    pyToolDefinition(),
    sh`status=$(cat ${rel}/.metalship/status 2>/dev/null || echo missing)`,
    sh`if [ "$status" != ready ] && [ "$status" != bad ]; then echo "release ${s.releaseId} is $status, not a complete release: refusing to switch to it" >&2; exit 1; fi`,
    'echo "SLOT none"',
    'units_changed=0',
    ...unitLines,
    'if [ "$units_changed" = 1 ]; then systemctl daemon-reload; fi',
    // an api that ran here before the host lost the role stops
    sh`systemctl disable --now --quiet ${l.units.api('blue')} ${l.units.api('green')} 2>/dev/null || true`,
    sh`prev=$(basename "$(readlink ${l.current} 2>/dev/null)" 2>/dev/null || true)`,
    sh`mstool link ${rel} ${l.current}`,
    sh`mstool link "$(readlink ${rel}/.venv)" ${l.venvLink}`,
    'echo "PREVIOUS $prev"',
    sh`systemctl enable --quiet ${l.units.target} ${followers}`,
    followers.length ? sh`systemctl restart ${followers}` : null,
    sh`printf '%s\n' "$(date -u +%FT%TZ) switched to ${s.releaseId} (no api here) from \${prev:-nothing}" >> ${l.history}`,
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

export function uvicornFlagsScript(rel: string, user: string): string {
  const probe = `import importlib.util, os
s = importlib.util.find_spec("uvicorn")
src = open(os.path.join(os.path.dirname(s.origin), "config.py")).read() if s else ""
print(" ".join(f for o, f in ${JSON.stringify(UVICORN_FLAGS)} if o in src))`;
  return script(
    sh`flags=$(runuser -u ${user} -- ${rel}/.venv/bin/python -I -c ${probe} 2>/dev/null) || flags=''`,
    sh`printf 'METALSHIP_UVICORN_FLAGS=%s\\n' "$flags" > ${rel}/.metalship/uvicorn.env`,
  );
}
