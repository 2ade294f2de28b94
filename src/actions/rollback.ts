import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { withHosts } from '../stages/hosts.js';
import { downgradeOnHost, pickMigrateHost } from '../stages/migrate.js';
import { listReleases, markBad, revertHosts, rollbackTarget, switchFleet, verifyStage } from '../stages/switch.js';
import { resultsTable, runAction, type ActionOutcome } from './run.js';

export async function rollback(s: Settings<'rollback'>, log: Log): Promise<ActionOutcome> {
  return withHosts(s, log, 'rollback', async (hosts) => {
    const { target, from } = await rollbackTarget(hosts, s['release-id']);
    log.info(`Rolling back from ${from || 'nothing'} to ${target}`);
    let schemaNote = '';
    if (s['migrate-down']) {
      const host = pickMigrateHost(hosts, s['migrate-host']);
      const listing = await listReleases(host);
      const revision = listing.releases.find((r) => r.id === target)?.schema_revision ?? '';
      if (!revision) {
        throw new Error(
          `migrate-down: the schema revision of ${target} is unknown on ${host.spec.label} (it was not deployed with migrations); nothing was changed`,
        );
      }
      const out = await log.group(`Downgrade the schema on ${host.spec.label} to ${revision}`, () => downgradeOnHost(host, from, revision, s, log));
      schemaNote =
        `\n\nSchema downgraded on ${host.spec.label}: ${out.before} → ${out.after}, using ${from}'s migrations. ` +
        `**Data written since ${target} was current may be lost**${out.backupPath ? `; a backup was taken first: \`${out.backupPath}\`` : ''}.`;
    }
    const sw = await switchFleet(hosts, target, s, log);
    const switchFailed = sw.results.filter((r) => !r.ok);
    let failure = switchFailed.length
      ? switchFailed.map((r) => `${r.host}: ${r.error}`).join('\n')
      : undefined;
    let healthy = false;
    if (!failure) {
      const checks = await verifyStage(
        hosts,
        { ...s, 'expect-body': s['expect-body'].replaceAll('{release}', target) },
        log,
      );
      const bad = checks.filter((r) => !r.ok);
      healthy = bad.length === 0;
      if (!healthy) {
        failure = `${target} is unhealthy after the rollback:\n${bad.map((r) => r.error).join('\n')}`;
        await revertHosts(hosts, sw.results, s, log);
      }
    }
    if (!failure && from) await markBad(hosts, from, `rolled back to ${target}`, log);
    return {
      outputs: { 'release-id': failure ? from : target, 'rolled-back-from': failure ? '' : from },
      results: sw.results.map((r) => ({ ...r, healthy })),
      summary:
        `Rollback from **${from || 'nothing'}** to **${target}**${from && !failure ? ` (${from} is now marked bad)` : ''}\n\n` +
        resultsTable(sw.results, [
          ['previous', 'left'],
          ['slot', 'slot'],
          ['seconds', 'seconds'],
        ]) +
        schemaNote,
      failure,
    };
  });
}

export const run = () => runAction('rollback', rollback);
