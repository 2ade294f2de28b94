// The whole deploy in one process: one connection and one lock per host from
// the first upload to the last health check.

import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { hasBalancer } from '../inputs/hosts.js';
import { runtimeOf, runtimeRecord } from '../inputs/runtime.js';
import { restoreProofStep } from '../remote/backup.js';
import { withHosts, type Host } from '../stages/hosts.js';
import {
  markFailedEverywhere,
  migrateOnHost,
  migrationFingerprint,
  pickMigrateHost,
  shouldMigrate,
} from '../stages/migrate.js';
import { readSource, releaseStage, type Source } from '../stages/release.js';
import { recorded, startDeployment } from '../stages/deployments.js';
import { revertRollout, rollOut } from '../stages/rollout.js';
import { cleanupStage, markBad, stopServing, verifyUrlStage } from '../stages/switch.js';
import { resultsTable, runAction, type ActionOutcome } from './run.js';
import { errorMessage } from '../errors.js';

export async function deploy(settings: Settings<'deploy'>, log: Log): Promise<ActionOutcome> {
  const source = await readSource(settings);
  // Recorded while the deploy runs: GitHub's answers never hold it back.
  const record = startDeployment(
    settings,
    {
      ref: source.revision,
      noRef: `the git revision of ${settings.source} is unknown (no GITHUB_SHA, not a git checkout)`,
      description: `metalship deploy of ${settings.app}`,
      payload: { app: settings.app },
    },
    log,
  );
  return recorded(record, () => deployOnHosts(settings, source, log), describeDeploy);
}

/** The status description: what serves now. */
function describeDeploy(outcome: ActionOutcome | null): string {
  const id = outcome?.outputs['release-id'];
  if (!outcome || !id) return 'the deploy failed before a release was made';
  if (!outcome.failure) return `${id} serves`;
  const previous = outcome.outputs['previous-release-id'];
  return `${id} failed${outcome.outputs['rolled-back'] === 'true' && previous ? `; ${previous} serves again` : ''}`;
}

async function deployOnHosts(settings: Settings<'deploy'>, source: Source, log: Log): Promise<ActionOutcome> {
  return withHosts(settings, log, 'deploy', async (hosts) => {
    const timings: Record<string, number> = {};
    const time = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
      const t = Date.now();
      try {
        return await fn();
      } finally {
        timings[name] = (Date.now() - t) / 1000;
      }
    };
    const outputs: Record<string, string> = { healthy: 'false', 'rolled-back': 'false' };
    // On api hosts the import check moves to the migration (when one runs):
    // each one's start of the new release in its standby slot is the check before traffic.
    const rel = await time('release', () =>
      releaseStage(hosts, settings, source, log, { switchFollows: true }),
    );
    const id = rel.releaseId;
    outputs['release-id'] = id;
    outputs['previous-release-id'] = rel.results.find((r) => r.previous)?.previous ?? '';
    outputs['bytes-uploaded'] = String(rel.results.reduce((n, r) => n + (r.bytesUploaded ?? 0), 0));
    const rows = new Map(
      rel.results.map((r) => [
        r.host,
        { ...r } as Record<string, unknown> & { host: string; ok: boolean; error?: string },
      ]),
    );
    const summary = () =>
      `Release **${id}** (previous: ${outputs['previous-release-id'] || 'none'})\n\n` +
      resultsTable(
        [...rows.values()],
        [
          ['previous', 'previous'],
          ['filesSent', 'files sent'],
          ['bytesUploaded', 'bytes sent'],
          ['batch', 'batch'],
          ['slot', 'slot'],
          ['healthy', 'healthy'],
        ],
      ) +
      `\n\nStage seconds: ${Object.entries(timings)
        .map(([k, v]) => `${k} ${v.toFixed(2)}`)
        .join(', ')}`;
    const fail = (failure: string): ActionOutcome => ({
      outputs,
      results: [...rows.values()],
      summary: summary(),
      failure,
    });

    const releaseFailed = rel.results.filter((r) => !r.ok);
    if (releaseFailed.length)
      return fail(
        `release ${id} failed; nothing was switched:\n${releaseFailed.map((r) => `${r.host}: ${r.error}`).join('\n')}`,
      );

    const migrate = shouldMigrate(settings.migrate, source.manifest, settings['migrate-command']);
    log.info(`${migrate.why}: ${migrate.run ? 'migrating' : 'no migration'}`);
    if (migrate.run) {
      const host = pickMigrateHost(hosts, settings['migrate-host']);
      try {
        const out = await time('migrate', async () => {
          const fingerprint = await migrationFingerprint(settings.source, source.manifest, [
            settings['migrate-command'],
            settings['revision-command'],
          ]);
          return log.group(`Migrate on ${host.spec.label}`, () =>
            migrateOnHost(
              host,
              id,
              {
                ...settings,
                command: settings['migrate-command'],
                backup: settings['migrate-backup'],
                importCheck: settings['import-check'] ? settings['app-module'] : null,
              },
              log,
              fingerprint,
            ),
          );
        });
        outputs['revision-before'] = out.before;
        outputs['revision-after'] = out.after;
        Object.assign(rows.get(host.spec.label) ?? {}, { schema: `${out.before || 'empty'} → ${out.after || 'empty'}` });
      } catch (err) {
        const message = errorMessage(err);
        await markFailedEverywhere(hosts, id, message);
        Object.assign(rows.get(host.spec.label) ?? {}, { ok: false, error: message });
        return fail(`the migration for ${id} failed on ${host.spec.label}; ${id} is marked failed and the previous release keeps serving:\n${message}`);
      }
    }

    const expect = { ...settings, 'expect-body': settings['expect-body'].replaceAll('{release}', id) };
    const record = runtimeRecord(runtimeOf(settings));
    const roll = await time('switch and verify', () =>
      rollOut(hosts, hasBalancer(settings.hosts), id, expect, log, {
        verify: expect,
        revertOnFailure: settings['rollback-on-failure'],
        list: true,
        // What the release stage recorded on every host, from these settings: no need to read it back.
        records: new Map(hosts.map((h) => [h.spec.label, record])),
      }),
    );
    for (const r of roll.results)
      Object.assign(rows.get(r.host) ?? {}, {
        slot: r.slot,
        ok: r.ok,
        ...(r.batch ? { batch: r.batch } : {}),
        ...(r.healthy !== undefined ? { healthy: r.healthy } : {}),
        ...(r.error ? { error: r.error } : {}),
      });
    let failure = roll.failure;
    if (!failure && settings.url) {
      const check = await time('verify', () => log.group('Verify the url', () => verifyUrlStage(expect, log)));
      rows.set(check.host, { ...check });
      if (!check.ok) {
        failure = check.error;
        roll.failedIn = 'verification';
        if (settings['rollback-on-failure']) roll.reverted = await revertRollout(hosts, roll, settings, log);
      }
    }
    if (failure) {
      const switched = roll.results.filter((r) => r.switched).map((r) => r.host);
      // Failed its checks on the standby's own socket: traffic never moved there.
      const neverServed = roll.results.filter((r) => !r.switched && r.healthy === false).map((r) => r.host);
      const stuck = switched.filter((h) => !roll.reverted.includes(h));
      outputs['rolled-back'] = String(roll.reverted.length > 0 || (neverServed.length > 0 && stuck.length === 0));
      if (switched.length && !settings['rollback-on-failure'])
        return fail(`${id} failed (rollback-on-failure is off, so the hosts switched stay on it):\n${failure}`);
      const stage = { switch: 'to switch', verification: 'verification' }[roll.failedIn ?? 'verification'];
      await markBad(hosts, id, `failed ${stage}`, log);
      const previous = outputs['previous-release-id'] || 'nothing';
      // A first release: nothing served before it, so nothing serves after.
      if (!outputs['previous-release-id'] && stuck.length === 0 && (switched.length || neverServed.length)) {
        // What a first release that never took traffic started goes too (revertHosts did it for the others).
        await stopServing(
          hosts.filter((h) => neverServed.includes(h.spec.label)),
          log,
        );
        return fail(
          `the first release ${id} failed ${stage}: nothing serves the app now (its services are stopped and current is removed on ${[...roll.reverted, ...neverServed].join(', ')}, as before the deploy):\n${failure}`,
        );
      }
      const never = neverServed.length ? `; it never took traffic on ${neverServed.join(', ')}` : '';
      const outcome =
        switched.length === 0
          ? neverServed.length
            ? ` before taking traffic: ${previous} kept serving (its checks failed on ${neverServed.join(', ')})`
            : '; no host reported switching to it, so none was switched back'
          : stuck.length === 0
            ? ` and was rolled back to ${previous} on ${roll.reverted.join(', ')}${never}`
            : `; rolled back to ${previous} on ${roll.reverted.join(', ') || 'no host'}, but ${stuck.join(', ')} could not be switched back and may still serve it${never}`;
      return fail(`${id} failed ${stage}${outcome}:\n${failure}`);
    }
    outputs.healthy = 'true';
    const listings = new Map(roll.results.flatMap((r) => (r.listing ? [[r.host, r.listing] as const] : [])));
    // Advisory, like the cleanup (and beside it): a host lost by now does not undo a verified deploy.
    const proofHost = pickMigrateHost(hosts, settings['migrate-host']);
    const [, proof] = await Promise.all([
      time('cleanup', () => cleanupStage(hosts, settings['keep-releases'], log, listings)),
      settings['restore-proof-days'] > 0
        ? restoreProofWarning(proofHost, settings, log).catch((err: unknown) => {
            log.warn(`could not read the last restore test on ${proofHost.spec.label}: ${errorMessage(err)}`);
            return null;
          })
        : null,
    ]);
    return { outputs, results: [...rows.values()], summary: summary() + (proof ? `\n\n⚠️ ${proof}` : '') };
  });
}

export const run = () => runAction('deploy', deploy);

/**
 * Scheduled restore tests stop silently (GitHub disables schedules after 60 days
 * without activity): every deploy looks at the last proof beside the backups.
 */
async function restoreProofWarning(host: Host, settings: Settings<'deploy'>, log: Log): Promise<string | null> {
  const proof = restoreProofStep(settings['backup-dir'], settings['restore-proof-days']);
  // A host that cannot tell is no reason to fail the deploy: exec, not step.
  const res = await host.conn.exec(proof.script, { what: proof.what });
  const warning = res.code === 0 ? proof.parse(res.stdout) : null;
  if (warning) log.warn(`${host.spec.label}: ${warning}`);
  return warning ? `${host.spec.label}: ${warning}` : null;
}
