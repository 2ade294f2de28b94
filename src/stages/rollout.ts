// The rolling switch over a fleet: batches of `batch-size` hosts, each taken
// out of the load balancers' rotation (when the hosts input has roles=lb),
// switched, verified and put back before the next. A batch that fails stops the rollout and every host switched so far
// goes back to its previous release, so that the fleet serves one release.

import type { Log } from '../log.js';
import { BALANCER_FAIL_TIMEOUT, drainStep, type BalancerMember } from '../remote/balancer.js';
import type { Host } from './hosts.js';
import type { ReleaseListing } from '../remote/verify.js';
import {
  revertHosts,
  switchHost,
  verifyHost,
  type ServiceSettings,
  type SwitchResult,
  type VerifySettings,
} from './switch.js';
import { errorMessage } from '../errors.js';
import { setTimeout as sleep } from 'node:timers/promises';

export interface RolloutSettings extends ServiceSettings {
  'batch-size': number;
}

export interface HostRollout extends SwitchResult {
  batch?: number;
  healthy?: boolean;
  /** It did switch (and so goes back on a failure). */
  switched?: boolean;
  /** The releases, listed by its health check (see the list option of rollOut). */
  listing?: ReleaseListing;
}

export interface Rollout {
  results: HostRollout[];
  /** Hosts returned to their previous release after the failure. */
  reverted: string[];
  /** What failed, naming the host. */
  failure?: string;
  /** Where it failed. */
  failedIn?: 'drain' | 'switch' | 'verification';
}

/** The verify settings that are not the release's own (those come from its switch). */
export type VerifyChecks = Omit<VerifySettings, 'health-path' | 'worker-command' | 'scheduler-command'>;

/** The health path and units to check on a host: those its switch ran the release with. */
function runtimeChecks(
  results: HostRollout[],
  host: Host,
): Pick<VerifySettings, 'health-path' | 'worker-command' | 'scheduler-command'> {
  const rt = results.find((r) => r.host === host.spec.label)?.runtime;
  if (!rt) throw new Error(`no switch result for ${host.spec.label}`);
  return {
    'health-path': rt['health-path'],
    'worker-command': rt['worker-command'],
    'scheduler-command': rt['scheduler-command'],
  };
}

export function batches<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Where the balancers reach a host: its upstream= address, else its own on port 80. */
function upstreamOf(spec: Host['spec']): { host: string; port: number } {
  return spec.upstream ?? { host: spec.host, port: 80 };
}

/** The api hosts as the balancers' upstream members. */
export function balancerMembers(hosts: Pick<Host, 'spec' | 'roles'>[]): BalancerMember[] {
  return hosts.filter((h) => h.roles.api).map((h) => ({ label: h.spec.label, ...upstreamOf(h.spec) }));
}

/** Takes hosts out of the balancers' rotation (or puts them back), in parallel; throws naming the hosts. */
export async function setDraining(hosts: Host[], draining: boolean, log: Log): Promise<void> {
  const results = await Promise.allSettled(
    hosts.map((h) => h.conn.step(drainStep(h.layout, upstreamOf(h.spec).port, draining))),
  );
  const failed = results.flatMap((r, i) =>
    r.status === 'rejected' ? [`${hosts[i]!.spec.label}: ${errorMessage(r.reason)}`] : [],
  );
  if (failed.length) throw new Error(`could not ${draining ? 'drain' : 'undrain'} ${failed.join('; ')}`);
  log.info(
    `${draining ? 'out of rotation' : 'back in rotation'}: ${hosts.map((h) => h.spec.label).join(', ')}`,
  );
}

export async function rollOut(
  hosts: Host[],
  /** A load balancer (roles=lb) is in front: drain each batch. */
  balanced: boolean,
  releaseId: string,
  settings: RolloutSettings,
  log: Log,
  /**
   * verify: the health check of each batch after its switch (null: only the
   * switch's readiness wait), of the health path and units the release runs with.
   */
  opts: {
    verify: VerifyChecks | null;
    revertOnFailure: boolean;
    /** Per host label: the target's runtime record, already read (a rollback reads it with its listing). */
    records?: Map<string, string | null>;
    /** Each host's health check also lists the releases (for a cleanup after). */
    list?: boolean;
  },
): Promise<Rollout> {
  const results: HostRollout[] = [];
  const groups = batches(hosts, settings['batch-size']);
  const apiHosts = hosts.filter((h) => h.roles.api);
  for (const [index, batch] of groups.entries()) {
    const title = groups.length > 1 ? ` (batch ${index + 1} of ${groups.length})` : '';
    // Draining needs an api host left in rotation; a batch of all of them
    // switches in place, which each host does without dropping a request.
    const draining = batch.filter((h) => h.roles.api);
    const drain = balanced && draining.length > 0 && apiHosts.some((h) => !draining.includes(h));
    let failure: string | undefined;
    let failedIn: Rollout['failedIn'];
    if (drain) {
      try {
        await setDraining(draining, true, log);
      } catch (err) {
        failure = errorMessage(err);
        failedIn = 'drain';
      }
    }
    if (!failure) {
      const names = batch.map((h) => h.spec.label).join(', ');
      const switched = await log.group(`Switch ${names} to ${releaseId}${title}`, () =>
        Promise.all(
          batch.map((host) =>
            switchHost(host, releaseId, settings, log, {
              record: opts.records?.get(host.spec.label),
              // The checks follow: the switch leaves them to the verify step.
              checksFollow: opts.verify !== null,
            })
              .then((r): HostRollout => ({ ...r, batch: index + 1, switched: true }))
              .catch((err): HostRollout => ({
                host: host.spec.label,
                ok: false,
                batch: index + 1,
                error: errorMessage(err),
              })),
          ),
        ),
      );
      results.push(...switched);
      const bad = switched.filter((r) => !r.ok);
      if (bad.length) {
        failure = bad.map((r) => `${r.host}: switch failed: ${r.error}`).join('\n');
        failedIn = 'switch';
      }
    }
    const verify = opts.verify;
    if (!failure && verify) {
      const checks = await log.group(`Verify ${batch.map((h) => h.spec.label).join(', ')}${title}`, () =>
        Promise.all(
          batch.map((host) =>
            verifyHost(host, { ...verify, ...runtimeChecks(results, host) }, log, { list: opts.list }).then(
              (ok) => {
                const row = results.find((r) => r.host === host.spec.label);
                if (row && ok.listing) row.listing = ok.listing;
                return null;
              },
              (err: unknown) => ({ host: host.spec.label, error: errorMessage(err) }),
            ),
          ),
        ),
      );
      for (const r of results) if (batch.some((h) => h.spec.label === r.host)) r.healthy = true;
      const sick = checks.filter((c): c is { host: string; error: string } => c !== null);
      for (const c of sick) {
        const row = results.find((r) => r.host === c.host)!;
        Object.assign(row, { ok: false, healthy: false, error: c.error });
      }
      if (sick.length) {
        failure = sick.map((c) => c.error).join('\n');
        failedIn = 'verification';
      }
    }
    if (failure) {
      const switched = results.filter((r) => r.switched);
      const reverted = opts.revertOnFailure ? await revertHosts(hosts, switched, settings, log) : [];
      // Back in rotation: the hosts now serve the previous release (or, with
      // revertOnFailure off, the new one by the user's choice).
      if (drain)
        await setDraining(draining, false, log).catch((err: unknown) =>
          log.error(`could not put the hosts back in rotation: ${errorMessage(err)}`),
        );
      return {
        results,
        reverted,
        failedIn,
        failure: `${groups.length > 1 ? `batch ${index + 1} of ${groups.length}: ` : ''}${failure}`,
      };
    }
    if (drain) {
      await setDraining(draining, false, log);
      // The balancers count the refusals of a drained host as failures and
      // skip it for fail_timeout after the last one, counted in whole seconds
      // (so up to 2 s more): the next batch leaves once they use it again.
      if (index < groups.length - 1) await sleep((BALANCER_FAIL_TIMEOUT + 2) * 1000);
    }
  }
  return { results, reverted: [] };
}

/** After a rollout that succeeded, puts every switched host back (a later check failed). */
export async function revertRollout(
  hosts: Host[],
  rollout: Rollout,
  settings: ServiceSettings,
  log: Log,
): Promise<string[]> {
  return revertHosts(
    hosts,
    rollout.results.filter((r) => r.switched),
    settings,
    log,
  );
}
