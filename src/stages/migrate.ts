// The migrate stage: once per deploy, on one host.

import { errorMessage } from '../errors.js';
import { findHost } from '../inputs/hosts.js';
import type { Log } from '../log.js';
import { markStep } from '../remote/release.js';
import {
  MIGRATE_LOCK_EXIT,
  MIGRATION_FAILED_EXIT,
  migrateStep,
  type MigrateOutput,
} from '../remote/migrate.js';
import { RemoteError } from '../transport/ssh.js';
import { lockHolder, type Host } from './hosts.js';

/** The host that migrates: the one named, else the one with the migrate role, else the first. */
export function pickMigrateHost(hosts: Host[], named: string): Host {
  if (named) {
    // parseInputs refuses a migrate-host that is not an app host; this guards the stage itself.
    const spec = findHost(
      hosts.map((h) => h.spec),
      named,
    );
    const host = hosts.find((h) => h.spec === spec);
    if (!host)
      throw new Error(
        `migrate-host '${named}' is not one of the hosts (${hosts.map((h) => h.spec.label).join(', ')})`,
      );
    return host;
  }
  return hosts.find((h) => h.roles.migrate) ?? hosts[0]!;
}

export interface MigrateSettings {
  'app-user': string;
  command: string[];
  'revision-command': string[];
  backup: boolean;
  'backup-keep': number;
  'lock-timeout': number;
}

export async function migrateOnHost(
  host: Host,
  releaseId: string,
  settings: MigrateSettings,
  log: Log,
): Promise<MigrateOutput> {
  try {
    const out = await host.conn.step(
      migrateStep(
        {
          layout: host.layout,
          releaseId,
          user: settings['app-user'],
          command: settings.command,
          revisionCommand: settings['revision-command'],
          recordIn: releaseId,
          backup: settings.backup ? { label: 'pre-migrate', keep: settings['backup-keep'] } : null,
          lockTimeout: settings['lock-timeout'],
          actor: lockHolder('migrate').actor,
        },
        `migrating for ${releaseId}`,
      ),
      { stream: true },
    );
    log.info(`[${host.spec.label}] schema ${out.before || 'empty'} -> ${out.after || 'empty'}`);
    return out;
  } catch (err) {
    if (err instanceof RemoteError && err.code === MIGRATE_LOCK_EXIT) throw err;
    // A failed migration: the release must never be switched to.
    const reason =
      err instanceof RemoteError && err.code === MIGRATION_FAILED_EXIT
        ? `migration failed:\n${err.stderrTail}`
        : errorMessage(err);
    await host.conn.step(markStep(host.layout, releaseId, 'failed', reason)).catch(() => undefined);
    throw err;
  }
}

/** Downgrades the schema to `revision`, running the code of the release being left. */
export async function downgradeOnHost(
  host: Host,
  fromRelease: string,
  revision: string,
  settings: Omit<MigrateSettings, 'command'> & { 'downgrade-command': string[] },
  log: Log,
): Promise<MigrateOutput> {
  const out = await host.conn.step(
    migrateStep(
      {
        layout: host.layout,
        releaseId: fromRelease,
        user: settings['app-user'],
        command: settings['downgrade-command'].map((w) => w.replaceAll('{revision}', revision)),
        revisionCommand: settings['revision-command'],
        recordIn: null,
        backup: settings.backup ? { label: 'pre-downgrade', keep: settings['backup-keep'] } : null,
        lockTimeout: settings['lock-timeout'],
        actor: lockHolder('rollback').actor,
      },
      `downgrading the schema to ${revision}`,
    ),
    { stream: true },
  );
  log.info(`[${host.spec.label}] schema ${out.before || 'empty'} -> ${out.after || 'empty'}`);
  if (out.after !== revision)
    throw new Error(`the downgrade left the schema at '${out.after}', not at ${revision}`);
  return out;
}

/** Marks a release failed on every host (a failed migration means no host may switch to it). */
export async function markFailedEverywhere(hosts: Host[], releaseId: string, reason: string): Promise<void> {
  await Promise.all(
    hosts.map((h) => h.conn.step(markStep(h.layout, releaseId, 'failed', reason)).catch(() => undefined)),
  );
}
