import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { MIGRATE_LOCK_EXIT } from '../remote/migrate.js';
import { withHosts } from '../stages/hosts.js';
import { RemoteError } from '../transport/ssh.js';
import { markFailedEverywhere, migrateOnHost, pickMigrateHost } from '../stages/migrate.js';
import { codeBlock, resultsTable, runAction, type ActionOutcome } from './run.js';
import { errorMessage } from '../errors.js';

export async function migrate(settings: Settings<'migrate'>, log: Log): Promise<ActionOutcome> {
  // Migrations are serialised by a PostgreSQL advisory lock, which holds across hosts and
  // runners; the per-host deploy lock is not taken, so a waiting migration shows that lock.
  return withHosts(
    settings,
    log,
    'migrate',
    async (hosts) => {
    const host = pickMigrateHost(hosts, settings['migrate-host']);
    try {
      const out = await log.group(`Migrate on ${host.spec.label}`, () => migrateOnHost(host, settings['release-id'], settings, log));
      const result = { host: host.spec.label, ok: true, before: out.before, after: out.after, backup: out.backupPath };
      return {
        outputs: {
          'revision-before': out.before,
          'revision-after': out.after,
          'backup-path': out.backupPath,
          changed: String(out.before !== out.after),
        },
        results: [result],
        summary:
          `Migrations for **${settings['release-id']}** on ${host.spec.label}: ${out.before || 'empty'} → ${out.after || 'empty'}` +
          (out.backupPath ? `\n\nBackup first: \`${out.backupPath}\` (${out.backupBytes} bytes, sha256 ${out.backupSha256.slice(0, 16)}…)` : '') +
          '\n\n' +
          resultsTable([result], [
            ['before', 'before'],
            ['after', 'after'],
          ]),
      };
    } catch (err) {
      const message = errorMessage(err);
      // A migration that never ran (the lock was busy) says nothing about the release.
      if (!(err instanceof RemoteError && err.code === MIGRATE_LOCK_EXIT)) await markFailedEverywhere(hosts, settings['release-id'], message);
      return {
        outputs: { 'revision-before': '', 'revision-after': '', 'backup-path': '', changed: 'false' },
        results: [{ host: host.spec.label, ok: false, error: message }],
        summary: `Migrations for **${settings['release-id']}** failed on ${host.spec.label}; the release is marked failed and current is unchanged.\n\n${codeBlock(message.slice(-3000))}`,
        failure: message,
      };
    }
    },
    { lock: false },
  );
}

export const run = () => runAction('migrate', migrate);
