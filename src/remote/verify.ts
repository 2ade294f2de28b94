// Health checks run on a host, and the listing and cleanup of releases.

import type { Layout } from './layout.js';
import { PROBE_USER, pyToolDefinition } from './pytool.js';
import { keyLines, script, sh } from './sh.js';
import { step, type Step } from './step.js';

export interface VerifySettings {
  layout: Layout;
  path: string;
  timeout: number;
  interval: number;
  expectStatus: number;
  expectBody: string;
  units: string[];
  /** The host serves the api (false: a worker-only host, only its units are checked). */
  api?: boolean;
}

/** What a health check found on a host. */
export interface HealthOutcome {
  healthy: boolean;
  /** The readiness endpoint's last answer (null on a host without the api). */
  answer: { ok: boolean; attempts: number; seconds: number; status: number; body: string } | null;
  unitsDown: string[];
  /** The services' recent journal lines, when unhealthy. */
  journal: string[];
  /** Why there was nothing to check. */
  problem: string;
}

/**
 * Polls the serving slot's readiness endpoint until it answers as expected,
 * then checks the units; on trouble, the services' recent journal lines (without
 * uvicorn's access log). It reports, and the caller decides: it exits 0.
 */
export function verifyStep(settings: VerifySettings): Step<HealthOutcome> {
  const layout = settings.layout;
  const text = script(
    pyToolDefinition(),
    'rc=0',
    settings.api === false
      ? null
      : script(
          sh`slot=$(cat ${layout.activeSlot} 2>/dev/null || true)`,
          'case "$slot" in blue|green) ;; *) echo "PROBLEM no api slot is serving on this host (nothing deployed yet?)"; exit 0;; esac',
          sh`sock=/run/${layout.app}-api-$slot/api.sock`,
          sh`out=$(mstool_as ${PROBE_USER} wait-ready "$sock" ${settings.path} ${settings.timeout} ${settings.interval} ${settings.expectStatus} ${settings.expectBody}) || rc=$?`,
          'echo "RESULT $out"',
        ),
    'failed=""',
    ...settings.units.map((u) => sh`if ! systemctl is-active --quiet ${u}; then failed="$failed ${u}"; fi`),
    'if [ -n "$failed" ]; then echo "UNITS_DOWN$failed"; fi',
    'if [ "$rc" != 0 ] || [ -n "$failed" ]; then',
    sh`  journalctl -u ${layout.units.api('blue')} -u ${layout.units.api('green')} ${settings.units.flatMap((u) => ['-u', u])} -n 300 --no-pager -o short-iso 2>/dev/null | grep -v 'HTTP/1\.[01]" [0-9]' | tail -n 20 | sed 's/^/JOURNAL /' || true`,
    'fi',
  );
  return step('health check', text, (stdout) => {
    const out = keyLines(stdout);
    const result = out.get('RESULT');
    const answer = result ? (JSON.parse(result) as NonNullable<HealthOutcome['answer']>) : null;
    const unitsDown = (out.get('UNITS_DOWN') ?? '').split(' ').filter(Boolean);
    const problem = out.get('PROBLEM') ?? '';
    return {
      healthy: !problem && (answer === null || answer.ok) && unitsDown.length === 0,
      answer,
      unitsDown,
      journal: out.all('JOURNAL'),
      problem,
    };
  });
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

/** Removes what the plan names; reads back what it removed. */
export function cleanupStep(layout: Layout, plan: { releases: string[]; venvs: string[] }): Step<string[]> {
  const removed = (stdout: string) => keyLines(stdout).all('removed');
  if (plan.releases.length === 0 && plan.venvs.length === 0)
    return step('cleanup', script('echo "nothing to clean up"'), removed);
  return step(
    'cleanup',
    script(
      // Marked first: a removal cut short (the run stopped, the host rebooted) leaves no "ready" half.
      ...plan.releases.map(
        (id) =>
          sh`if [ -d ${layout.release(id)}/.metalship ]; then echo removing > ${layout.release(id)}/.metalship/status; fi; rm -rf -- ${layout.release(id)} && echo "removed release ${id}"`,
      ),
      ...plan.venvs.map((v) => sh`rm -rf -- ${layout.venvs}/${v} && echo "removed virtualenv ${v}"`),
    ),
    removed,
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
