// The rolling switch over a fleet: every host first starts the release in its
// standby slot, then batches of `batch-size` hosts are switched: the second
// once the first passed all of its checks, each later one once the api of the
// one before answers its checks (the workers' and schedulers' checks go on
// meanwhile). No host needs taking out of the load
// balancers' rotation: each checks the release on its standby slot's own socket
// before traffic moves (a release failing that never serves), and the move is a
// rename that drops no request. A failure on any host stops the rollout and
// every host switched so far goes back to its previous release, so that the
// fleet serves one release.

import type { Log } from '../log.js';
import type { BalancerMember } from '../remote/balancer.js';
import type { Host } from './hosts.js';
import type { ReleaseListing } from '../remote/verify.js';
import {
  PrecheckFailure,
  revertHosts,
  SwitchedThenFailed,
  standDown,
  switchHost,
  type ServiceSettings,
  type SwitchResult,
  type VerifyChecks,
} from './switch.js';
import { errorMessage } from '../errors.js';

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
  /** Its switch stopped after traffic moved (killed, cut, out of time): no verdict on the release. */
  interrupted?: boolean;
}

export interface Rollout {
  results: HostRollout[];
  /** Hosts returned to their previous release after the failure. */
  reverted: string[];
  /** What failed, naming the host. */
  failure?: string;
  /** Where it failed (verification: its checks, before or after traffic moved). */
  failedIn?: 'switch' | 'verification';
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

export async function rollOut(
  hosts: Host[],
  /** A load balancer (roles=lb) is in front: a drain rule an older version left is cleared. */
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
  const switchRow = (
    host: Host,
    batch: number | undefined,
    startOnly: boolean,
    onApiVerified?: () => void,
  ): Promise<HostRollout> =>
    switchHost(host, releaseId, settings, log, {
      record: opts.records?.get(host.spec.label),
      // The checks follow: the switch leaves them to the verify step,
      // but for those on the standby's socket before traffic moves.
      checksFollow: opts.verify !== null,
      precheck: opts.verify,
      clearDrainPort: balanced && host.roles.api ? upstreamOf(host.spec).port : undefined,
      startOnly,
      // Verified by the switch's own script, once traffic moved.
      checks: opts.verify ? { settings: opts.verify, list: opts.list } : undefined,
      onApiVerified,
      // Rolling: the next batch waits for this one's api alone; its worker and scheduler start after it.
      followersAfterApi: groups.length > 1,
    })
      .then(({ checked, ...r }): HostRollout => {
        // Its checks after traffic moved: a host that fails them did switch (and goes back).
        const verdict = !checked
          ? {}
          : checked.error !== undefined
            ? { ok: false, healthy: false, error: checked.error }
            : { healthy: true, ...(checked.listing ? { listing: checked.listing } : {}) };
        return { ...r, ...(batch ? { batch } : {}), switched: !startOnly, ...verdict };
      })
      .catch((err): HostRollout => ({
        host: host.spec.label,
        ok: false,
        ...(batch ? { batch } : {}),
        error: errorMessage(err),
        // It never took traffic: its checks failed on the standby's socket.
        ...(err instanceof PrecheckFailure ? { healthy: false } : {}),
        // It did switch before it failed: it goes back with the others.
        ...(err instanceof SwitchedThenFailed
          ? { switched: true, previous: err.previous, interrupted: true }
          : {}),
      }));
  const describe = (bad: HostRollout[]) => ({
    failure: bad
      .map(
        (r) =>
          (groups.length > 1 && r.batch ? `batch ${r.batch} of ${groups.length}: ` : '') +
          (r.healthy === false ? r.error! : `${r.host}: switch failed: ${r.error}`),
      )
      .join('\n'),
    failedIn: bad.every((r) => r.healthy === false) ? ('verification' as const) : ('switch' as const),
  });
  // Rolling with checks: every api host starts and checks the release in its
  // standby slot first, in parallel; the batches then only move traffic (the
  // slot is warm) and verify. A host that fails at the start fails the rollout
  // before any traffic moved.
  const waiting = new Set<string>();
  if (groups.length > 1 && opts.verify !== null) {
    const starters = hosts.filter((h) => h.roles.api);
    const started = await log.group(
      `Start ${releaseId} on the standby slots of ${starters.map((h) => h.spec.label).join(', ')}`,
      () => Promise.all(starters.map((host) => switchRow(host, undefined, true))),
    );
    for (const r of started) if (r.ok) waiting.add(r.host);
    const bad = started.filter((r) => !r.ok);
    if (bad.length) {
      results.push(...bad);
      await standDown(
        hosts.filter((h) => waiting.has(h.spec.label)),
        releaseId,
        log,
      );
      return { results, reverted: [], ...describe(bad) };
    }
  }
  // The batches, in order. The first is checked whole before any other moves
  // (the canary). From the second on, the next batch moves once this one's api
  // answers (its checks' mark: through the slot's socket and nginx); its
  // worker's and scheduler's checks, which wait for their start, go on
  // meanwhile. The rollout succeeds only once every host passed all of its
  // checks; a failure anywhere moves no further batch, lets those under way
  // end, and every host switched goes back. (Without checks, each batch ends
  // before the next.)
  const rows: Promise<HostRollout>[] = [];
  const ended: HostRollout[] = [];
  const timing = groups.length > 1 ? ` in ${groups.length} batches` : '';
  await log.group(
    `Switch ${hosts.map((h) => h.spec.label).join(', ')} to ${releaseId}${timing}${opts.verify ? ', then verify' : ''}`,
    async () => {
      for (const [index, batch] of groups.entries()) {
        if (ended.some((r) => !r.ok)) break;
        const names = batch.map((h) => h.spec.label).join(', ');
        if (groups.length > 1) log.info(`batch ${index + 1} of ${groups.length}: ${names}`);
        const gates: Promise<void>[] = [];
        const batchRows = batch.map((host) => {
          let open = (): void => {};
          gates.push(new Promise<void>((resolve) => (open = resolve)));
          // The first batch is checked whole (the canary): a release whose worker
          // fails everywhere stops there. From the second on, the api's answer lets the next move.
          return switchRow(host, index + 1, false, index > 0 ? open : undefined).then((r) => {
            ended.push(r);
            if (r.switched) waiting.delete(r.host);
            open();
            return r;
          });
        });
        rows.push(...batchRows);
        // In the timeline: each batch from its switch to its last check.
        if (groups.length > 1)
          void log.timed({ kind: 'stage', what: `batch ${index + 1} of ${groups.length}: ${names}` }, () =>
            Promise.all(batchRows),
          );
        await Promise.all(gates);
      }
      await Promise.all(rows);
    },
  );
  results.push(...(await Promise.all(rows)));
  const bad = results.filter((r) => !r.ok);
  if (bad.length) {
    const { failure, failedIn } = describe(bad);
    const switched = results.filter((r) => r.switched);
    const reverted = opts.revertOnFailure ? await revertHosts(hosts, switched, settings, log) : [];
    // Started, never moved: their standby slots stop, their unit files go back.
    await standDown(
      hosts.filter((h) => waiting.has(h.spec.label)),
      releaseId,
      log,
    );
    return {
      results,
      reverted,
      failedIn,
      failure,
    };
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
