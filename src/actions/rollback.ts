import { freezeAllowsRollback } from '../stages/operations.js';
import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { hasBalancer } from '../inputs/hosts.js';
import { withHosts, type Host } from '../stages/hosts.js';
import { recorded, startDeployment } from '../stages/deployments.js';
import { downgradeOnHost, pickMigrateHost } from '../stages/migrate.js';
import { revertRollout, rollOut } from '../stages/rollout.js';
import {
  listReleases,
  markBad,
  rollbackTarget,
  runtimeOnHost,
  verifyUrlStage,
} from '../stages/switch.js';
import { rollbackPlanStep, type RollbackPlan } from '../remote/rollback.js';
import { RUNTIME_RECORD_MAX } from '../inputs/runtime.js';
import { resultsTable, runAction, type ActionOutcome } from './run.js';

export async function rollback(settings: Settings<'rollback'>, log: Log): Promise<ActionOutcome> {
  return withHosts<ActionOutcome, RollbackPlan>(
    settings,
    log,
    'rollback',
    async (hosts, _balancers, plans) => {
    const listings = plans.map((p) => p.listing);
    if (settings['if-current']) {
      const currents = listings.map((l) => l.links.current ?? '');
      const on = hosts.filter((_, i) => currents[i] === settings['if-current']);
      if (on.length === 0) {
        log.info(`${settings['if-current']} is not current on any host: nothing to undo`);
        return {
          outputs: { 'release-id': currents[0] ?? '', 'rolled-back-from': '' },
          results: hosts.map((h, i) => ({ host: h.spec.label, ok: true, current: currents[i] })),
          summary: `Nothing to undo: **${settings['if-current']}** is not current on any host.`,
        };
      }
      if (on.length < hosts.length)
        throw new Error(
          `if-current: ${settings['if-current']} is current on ${on.map((h) => h.spec.label).join(', ')} but not on ${hosts
            .filter((h) => !on.includes(h))
            .map((h) => `${h.spec.label} (${currents[hosts.indexOf(h)] || 'nothing'})`)
            .join(', ')}; nothing was changed: name the hosts to roll back in hosts`,
        );
    }
    const { target, from } = rollbackTarget(hosts, listings, settings['release-id']);
    freezeAllowsRollback(
      hosts,
      listings,
      plans.map((p) => p.freeze),
      target,
      settings['migrate-down'],
      log,
    );
    log.info(`Rolling back from ${from || 'nothing'} to ${target}`);
    // Recorded while the rollback runs: GitHub's answers never hold traffic back.
    const record = startDeployment(
      settings,
      {
        ref: listings[0]!.releases.find((r) => r.id === target)?.revision ?? '',
        noRef: `the git revision of ${target} is unknown (it was released without one)`,
        description: `metalship rollback of ${settings.app} to ${target}`,
        payload: { app: settings.app, release: target, 'rolled-back-from': from },
      },
      log,
    );
    return recorded(
      record,
      () => restore(hosts, plans, settings, target, from, log),
      (outcome) => (outcome && !outcome.failure ? `${target} serves again` : `the rollback to ${target} failed`),
    );
    },
    // Read in the round trip that takes each host's lock, before traffic moves:
    // the listing (for the if-current check and the choice of target), the
    // freeze, and the likely target's runtime record.
    { underLock: (h) => rollbackPlanStep(h.layout, settings['release-id'], RUNTIME_RECORD_MAX) },
  );
}

/** Switches the hosts back to target (its schema first, with migrate-down) and verifies it. */
async function restore(
  hosts: Host[],
  plans: RollbackPlan[],
  settings: Settings<'rollback'>,
  target: string,
  from: string,
  log: Log,
): Promise<ActionOutcome> {
  let schemaNote = '';
  if (settings['migrate-down']) {
    const host = pickMigrateHost(hosts, settings['migrate-host']);
    const listing = await listReleases(host);
    const revision = listing.releases.find((r) => r.id === target)?.schema_revision ?? '';
    if (!revision) {
      throw new Error(
        `migrate-down: the schema revision of ${target} is unknown on ${host.spec.label} (it was not deployed with migrations); nothing was changed`,
      );
    }
    // As the app user the release left ran as.
    const user = (await runtimeOnHost(host, from, settings, log))['app-user'];
    const out = await log.group(`Downgrade the schema on ${host.spec.label} to ${revision}`, () =>
      downgradeOnHost(host, from, revision, { ...settings, 'app-user': user }, log),
    );
    schemaNote =
      `\n\nSchema downgraded on ${host.spec.label}: ${out.before} → ${out.after}, using ${from}'s migrations. ` +
      `**Data written since ${target} was current may be lost**${out.backupPath ? `; a backup was taken first: \`${out.backupPath}\`` : ''}.`;
  }
  const expect = { ...settings, 'expect-body': settings['expect-body'].replaceAll('{release}', target) };
  // The record read with the listing serves when it is the target's (else the switch reads it).
  const records = new Map(
    hosts.flatMap((h, i) => (plans[i]!.recordOf === target ? [[h.spec.label, plans[i]!.record] as const] : [])),
  );
  const sw = await rollOut(hosts, hasBalancer(settings.hosts), target, expect, log, {
    verify: expect,
    revertOnFailure: true,
    records,
  });
  const stuck = sw.results.filter((r) => r.switched && !sw.reverted.includes(r.host)).map((r) => r.host);
  const back = stuck.length
    ? `the hosts are back on ${from || 'nothing'} but ${stuck.join(', ')}, which could not be switched back and may still serve ${target}`
    : `the hosts are back on ${from || 'nothing'}`;
  let failure = sw.failure ? `rolling back to ${target} failed; ${back}:\n${sw.failure}` : undefined;
  if (!failure && settings.url) {
    const check = await log.group('Verify the url', () => verifyUrlStage(expect, log));
    if (!check.ok) {
      failure = `${target} is unhealthy after the rollback:\n${check.error}`;
      await revertRollout(hosts, sw, settings, log);
    }
  }
  const healthy = !failure;
  if (!failure && from) await markBad(hosts, from, `rolled back to ${target}`, log);
  // The target served with this run's settings (its record says so) and failed: never a default target
  // again. Not when its switch was only cut short after traffic moved (killed, cut): that says nothing of it.
  const interruptedOnly = !!sw.failure && sw.results.filter((r) => !r.ok).every((r) => r.interrupted);
  if (failure && !interruptedOnly) await markBad(hosts, target, `failed after a rollback to it`, log);
  return {
    outputs: { 'release-id': failure ? from : target, 'rolled-back-from': failure ? '' : from },
    results: sw.results.map((r) => ({ ...r, healthy: healthy && r.healthy !== false })),
    summary:
      `Rollback from **${from || 'nothing'}** to **${target}**${from && !failure ? ` (${from} is now marked bad)` : ''}\n\n` +
      resultsTable(sw.results, [
        ['batch', 'batch'],
        ['previous', 'left'],
        ['slot', 'slot'],
        ['seconds', 'seconds'],
      ]) +
      schemaNote,
    failure,
  };
}

export const run = () => runAction('rollback', rollback);
