// The migrate stage: once per deploy, on one host.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../errors.js';
import { findHost } from '../inputs/hosts.js';
import type { Log } from '../log.js';
import { markStep } from '../remote/release.js';
import {
  MIGRATE_LOCK_EXIT,
  MIGRATION_FAILED_EXIT,
  migrateStep,
  orAlembic,
  type MigrateOutput,
} from '../remote/migrate.js';
import { RemoteError } from '../transport/ssh.js';
import { lockHolder, type Host } from './hosts.js';
import type { Manifest } from './source.js';

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

/**
 * Whether a deploy migrates. auto: when migrate-command is set, or the release
 * has alembic.ini at its top (what the default command needs).
 */
export function shouldMigrate(
  migrate: 'auto' | 'true' | 'false',
  manifest: Manifest,
  command: string[],
): { run: boolean; why: string } {
  if (migrate !== 'auto') return { run: migrate === 'true', why: `migrate is ${migrate}` };
  if (command.length) return { run: true, why: 'migrate is auto and migrate-command is set' };
  return manifest.files.some(([p]) => p === 'alembic.ini') ||
    manifest.links.some(([p]) => p === 'alembic.ini')
    ? { run: true, why: 'migrate is auto and the release has alembic.ini' }
    : { run: false, why: 'migrate is auto, the release has no alembic.ini and migrate-command is not set' };
}

/**
 * The directories alembic.ini's [alembic] section takes migrations from
 * (script_location, version_locations), as release paths; null when one is not
 * a plain path inside the release (then no migration is ever skipped).
 */
export function alembicDirectories(ini: string): string[] | null {
  const values: Record<string, string> = {};
  let section = '';
  let key = '';
  for (const line of ini.split(/\r?\n/)) {
    if (/^\s*([#;]|$)/.test(line)) continue;
    if (/^\s*\[/.test(line)) {
      // Only plain headers: Python's configparser reads `[alembic] x` and
      // `[ alembic ]` its own way, and [DEFAULT] feeds every section.
      const header = /^\[([A-Za-z0-9_.-]+)\]$/.exec(line);
      if (!header || header[1] === 'DEFAULT') return null;
      [section, key] = [header[1]!, ''];
      continue;
    }
    if (/^\s/.test(line)) {
      if (section === 'alembic' && key) values[key] += ' ' + line.trim();
      continue;
    }
    const kv = /^([^=:]+?)\s*[=:]\s*(.*)$/.exec(line);
    key = kv ? kv[1]!.trim().toLowerCase() : '';
    if (section === 'alembic' && kv) values[key] = kv[2]!.trim();
  }
  // A separator setting splits version_locations another way (alembic's `os`
  // template among them): not placed here, so never skipped.
  if ('version_path_separator' in values || 'path_separator' in values) return null;
  const paths = [values.script_location ?? '', ...(values.version_locations ?? '').split(/[\s,]+/)].filter(
    Boolean,
  );
  if (!values.script_location) return null;
  const dirs: string[] = [];
  for (let p of paths) {
    p = p.replace(/^%\(here\)s\//, '');
    const pkg = /^([A-Za-z_][\w.]*):(.*)$/.exec(p);
    if (pkg) p = pkg[1]!.replaceAll('.', '/') + (pkg[2] ? '/' + pkg[2] : '');
    p = p.replace(/\/+$/, '').replace(/^\.\//, '');
    if (!p || p.startsWith('/') || /[%\s:;#]/.test(p) || p.split('/').some((x) => x === '..' || x === '.'))
      return null;
    dirs.push(p);
  }
  return dirs;
}

/**
 * The checksum of what decides a migration: alembic.ini, the files under its
 * migration directories, the commands, and release files the commands name
 * (a script, or a `-m` module). Computed on the runner from what it sends; null
 * without alembic.ini or with directories it cannot place.
 */
export async function migrationFingerprint(
  source: string,
  manifest: Manifest,
  commands: string[][],
): Promise<string | null> {
  if (!manifest.files.some(([p]) => p === 'alembic.ini')) return null;
  const dirs = alembicDirectories(await readFile(join(source, 'alembic.ini'), 'utf8'));
  if (!dirs) return null;
  const words = commands.flat();
  const modules = words.flatMap((w, i) => (words[i - 1] === '-m' ? [w.replaceAll('.', '/')] : []));
  const named = (p: string) =>
    p === 'alembic.ini' ||
    words.includes(p) ||
    [...dirs, ...modules].some((d) => p.startsWith(d + '/')) ||
    modules.some((m) => p === m + '.py');
  const files = manifest.files.filter(([p]) => named(p)).map(([p, digest, mode]) => [p, digest, mode]);
  // Every directory it names must hold files of the release: one that holds
  // none is placed wrong (or a link), and a wrong place never skips.
  if (!dirs.every((d) => files.some(([p]) => p!.startsWith(d + '/')))) return null;
  const links = manifest.links.filter(([p]) => named(p));
  return createHash('sha256').update(JSON.stringify({ commands, files, links })).digest('hex');
}

export interface MigrateSettings {
  'app-user': string;
  command: string[];
  'revision-command': string[];
  backup: boolean;
  'backup-keep': number;
  'lock-timeout': number;
  /** The app module to import before migrating (see MigrateScriptSettings.importCheck). */
  importCheck?: string | null;
}

export async function migrateOnHost(
  host: Host,
  releaseId: string,
  settings: MigrateSettings,
  log: Log,
  fingerprint: string | null = null,
): Promise<MigrateOutput> {
  try {
    const out = await host.conn.step(
      migrateStep(
        {
          layout: host.layout,
          releaseId,
          user: settings['app-user'],
          command: orAlembic(settings.command, 'upgrade', 'head'),
          revisionCommand: orAlembic(settings['revision-command'], 'current'),
          recordIn: releaseId,
          fingerprint,
          backup: settings.backup ? { label: 'pre-migrate', keep: settings['backup-keep'] } : null,
          importCheck: settings.importCheck ?? null,
          lockTimeout: settings['lock-timeout'],
          actor: lockHolder('migrate').actor,
        },
        `migrating for ${releaseId}`,
      ),
      { stream: true },
    );
    log.info(
      `[${host.spec.label}] schema ${out.before || 'empty'} -> ${out.after || 'empty'}${out.skipped ? ` (${out.skipped})` : ''}`,
    );
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
        command: orAlembic(settings['downgrade-command'], 'downgrade', '{revision}').map((w) =>
          w.replaceAll('{revision}', revision),
        ),
        revisionCommand: orAlembic(settings['revision-command'], 'current'),
        recordIn: null,
        fingerprint: null,
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
