// Blue/green switch on one host: start the release in the idle api slot, wait
// until it is ready on its own socket, point nginx at it (graceful reload), then
// point `current` at it and restart the worker and the single scheduler. The
// old slot stays up as a warm standby, so a rollback to it needs no restart.

import type { Layout, Slot } from './layout.js';
import { SLOTS } from './layout.js';
import { siteConf, upstreamConf } from './nginx.js';
import { pyToolDefinition } from './pytool.js';
import { ensureFile, raw, script, sh } from './sh.js';

export interface HostFacts {
  activeSlot: Slot | null;
  slots: Record<Slot, { release: string; active: boolean }>;
  current: string;
  targetStatus: string;
  nginx: boolean;
  gracefulShutdownFlag: boolean;
}

/**
 * A shell condition: the uvicorn of this Python understands --timeout-graceful-shutdown
 * (0.21+; older ones refuse unknown flags). Shared with provision, so both write the same units.
 */
export function gracefulFlagTest(python: string): string {
  return sh`[ -x ${python} ] && ${python} -c 'import os, uvicorn; import sys; sys.exit(0 if "timeout_graceful_shutdown" in open(os.path.join(os.path.dirname(uvicorn.__file__), "config.py")).read() else 1)' 2>/dev/null`;
}

/** Reads what the switch needs to know about a host, in one round trip. */
export function factsScript(l: Layout, releaseId: string): string {
  const rel = l.release(releaseId);
  return script(
    sh`echo "ACTIVE $(cat ${l.activeSlot} 2>/dev/null || true)"`,
    ...SLOTS.map(
      (s) =>
        sh`echo "SLOT ${s} $(basename "$(readlink ${l.slot(s)} 2>/dev/null)" 2>/dev/null || true) $(systemctl is-active ${l.units.api(s)} 2>/dev/null || true)"`,
    ),
    sh`echo "CURRENT $(basename "$(readlink ${l.current} 2>/dev/null)" 2>/dev/null || true)"`,
    sh`echo "STATUS $(cat ${rel}/.metalship/status 2>/dev/null || echo missing)"`,
    'echo "NGINX $(command -v nginx >/dev/null 2>&1 && echo yes || echo no)"',
    // uvicorn learnt --timeout-graceful-shutdown in 0.21; older ones refuse unknown flags.
    sh`if ${raw(gracefulFlagTest(`${rel}/.venv/bin/python`))}; then echo "GRACEFUL yes"; else echo "GRACEFUL no"; fi`,
  );
}

export function parseFacts(stdout: string): HostFacts {
  const facts: HostFacts = {
    activeSlot: null,
    slots: { blue: { release: '', active: false }, green: { release: '', active: false } },
    current: '',
    targetStatus: 'missing',
    nginx: false,
    gracefulShutdownFlag: false,
  };
  for (const line of stdout.split('\n')) {
    const [key, ...rest] = line.trim().split(/\s+/);
    if (key === 'ACTIVE') facts.activeSlot = rest[0] === 'blue' || rest[0] === 'green' ? rest[0] : null;
    if (key === 'SLOT' && (rest[0] === 'blue' || rest[0] === 'green')) {
      const hasRelease = rest.length >= 3;
      facts.slots[rest[0]] = {
        release: hasRelease ? (rest[1] ?? '') : '',
        active: rest[rest.length - 1] === 'active',
      };
    }
    if (key === 'CURRENT') facts.current = rest[0] ?? '';
    if (key === 'STATUS') facts.targetStatus = rest[0] ?? 'missing';
    if (key === 'NGINX') facts.nginx = rest[0] === 'yes';
    if (key === 'GRACEFUL') facts.gracefulShutdownFlag = rest[0] === 'yes';
  }
  return facts;
}

export interface SwitchSettings {
  layout: Layout;
  releaseId: string;
  /** The slot that will serve the release (the idle one, or the standby already running it). */
  slot: Slot;
  units: Record<string, string | null>;
  healthPath: string;
  readyTimeout: number;
  serverName: string;
  worker: boolean;
  scheduler: boolean;
}

export function switchScript(s: SwitchSettings): string {
  const l = s.layout;
  const rel = l.release(s.releaseId);
  const api = l.units.api(s.slot);
  const other = l.units.api(s.slot === 'blue' ? 'green' : 'blue');
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
  return script(
    pyToolDefinition(),
    sh`status=$(cat ${rel}/.metalship/status 2>/dev/null || echo missing)`,
    sh`if [ "$status" != ready ] && [ "$status" != bad ]; then echo "release ${s.releaseId} is $status, not a complete release: refusing to switch to it" >&2; exit 1; fi`,
    'command -v nginx >/dev/null 2>&1 || { echo "nginx is not installed: run the provision action first" >&2; exit 1; }',
    'units_changed=0',
    ...unitLines,
    'if [ "$units_changed" = 1 ]; then systemctl daemon-reload; fi',
    'nginx_site_new=0',
    sh`if [ ! -e ${l.nginxSite} ]; then`,
    ensureFile(l.nginxSite, siteConf(l, { serverName: s.serverName, tls: null }), {
      mode: '644',
      label: 'nginx site',
      onChange: 'nginx_site_new=1',
    }),
    sh`  ln -sfn ${l.nginxSite} ${l.nginxSiteEnabled}`,
    s.serverName === '_' ? sh`  rm -f /etc/nginx/sites-enabled/default` : null,
    'fi',
    // Start the release beside the serving one (unless the standby already runs it, unchanged).
    sh`was=$(basename "$(readlink ${l.slot(s.slot)} 2>/dev/null)" 2>/dev/null || true)`,
    sh`mstool link ${rel} ${l.slot(s.slot)}`,
    sh`if [ "$units_changed" = 1 ] || [ "$was" != ${s.releaseId} ] || ! systemctl is-active --quiet ${api}; then`,
    sh`  echo "starting ${s.releaseId} in the ${s.slot} slot"`,
    sh`  systemctl restart ${api}`,
    'else',
    sh`  echo "the ${s.slot} slot already runs ${s.releaseId}"`,
    'fi',
    sh`if ! ready=$(mstool wait-ready ${l.apiSocket(s.slot)} ${s.healthPath} ${s.readyTimeout} 0.1 200 ''); then`,
    '  echo "$ready" >&2',
    sh`  journalctl -u ${api} -n 30 --no-pager -o cat >&2 || true`,
    sh`  systemctl stop ${api} || true`,
    sh`  echo "release ${s.releaseId} did not become ready in the ${s.slot} slot within ${s.readyTimeout} s; traffic stays on the serving release" >&2`,
    '  exit 1',
    'fi',
    'echo "READY $ready"',
    // Traffic moves only now, by renaming the socket link nginx connects through:
    // requests already on the old slot finish there, new ones reach the new slot.
    sh`mkdir -p ${l.runDir}`,
    sh`mstool link ${l.apiSocket(s.slot)} ${l.apiLink}`,
    sh`echo ${s.slot} > ${l.activeSlot}`,
    'nginx_changed=$nginx_site_new',
    ensureFile(l.nginxUpstream, upstreamConf(l), {
      mode: '644',
      label: 'nginx upstream',
      onChange: 'nginx_changed=1',
    }),
    'if ! systemctl is-active --quiet nginx; then nginx -t -q && systemctl start nginx;',
    'elif [ "$nginx_changed" = 1 ]; then nginx -t -q && systemctl reload nginx; fi',
    sh`prev=$(basename "$(readlink ${l.current} 2>/dev/null)" 2>/dev/null || true)`,
    sh`mstool link ${rel} ${l.current}`,
    sh`mstool link "$(readlink ${rel}/.venv)" ${l.venvLink}`,
    sh`systemctl enable --quiet ${l.units.target} ${api} ${followers}`,
    sh`systemctl disable --quiet ${other} 2>/dev/null || true`,
    followers.length ? sh`systemctl restart ${followers}` : null,
    'echo "PREVIOUS $prev"',
    sh`printf '%s\n' "$(date -u +%FT%TZ) switched to ${s.releaseId} (${s.slot} slot) from \${prev:-nothing}" >> ${l.history}`,
  );
}
