// Restore tests: find the newest backup and its manifest, restore it into a
// scratch database, inspect it (row counts, amcheck, checks), start the current
// release against it, and drop everything again. Each is a Step: its settings as
// quoted assignments, then the bash of src/remote/sh/restore-*.sh, and the parser
// of the `KEY value` lines that bash prints.

import { readFileSync } from 'node:fs';
import { ROW_COUNTS_SQL, lastVerifiedPath, type BackupManifest } from './backup.js';
import { RECEIVER_USER, copyVerifiedPath } from './offsite.js';
import { ROOT_ONLY_FUNCTION, rootOnly } from './paths.js';
import { PROBE_USER, pyToolDefinition } from './pytool.js';
import { assignments, keyLines, script, sh, shellFile, textVar, writeFileAtomic } from './sh.js';
import { plainStep, step, type Step } from './step.js';

/** Written as the scratch database's comment: only a database carrying it is ours to drop. */
export const SCRATCH_MARKER = 'metalship backup-verify scratch database';

/** How the restore steps end when they refuse: the outcomes are told apart by these, never by the message. */
export const RESTORE_EXIT = {
  /** find: no backup directory, no backup, or a backup without its manifest. */
  noBackup: 3,
  /** restore: the dump's size or sha256 is not its manifest's. */
  checksum: 4,
  /** prepare: a database of the scratch name exists and is not ours. */
  notOurs: 5,
  /** restore: pg_restore failed. */
  restoreFailed: 6,
  /** smoke: the current release did not answer on the scratch database. */
  smokeFailed: 7,
} as const;

// Each read by name, so that ncc ships each file beside the bundles.
const COMMON_SH = shellFile(readFileSync(new URL('./sh/restore-common.sh', import.meta.url), 'utf8'));
const FIND_SH = shellFile(readFileSync(new URL('./sh/restore-find.sh', import.meta.url), 'utf8'));
const PREPARE_SH = shellFile(readFileSync(new URL('./sh/restore-prepare.sh', import.meta.url), 'utf8'));
const RESTORE_SH = shellFile(readFileSync(new URL('./sh/restore-dump.sh', import.meta.url), 'utf8'));
const INSPECT_SH = shellFile(readFileSync(new URL('./sh/restore-inspect.sh', import.meta.url), 'utf8'));
const SMOKE_SH = shellFile(readFileSync(new URL('./sh/restore-smoke.sh', import.meta.url), 'utf8'));
const DROP_SH = shellFile(readFileSync(new URL('./sh/restore-drop.sh', import.meta.url), 'utf8'));

export interface FoundBackup {
  dump: string;
  size: number;
  /** The backup host's clock (epoch seconds). */
  now: number;
  manifest: BackupManifest;
  lastVerified: LastVerified | null;
  /** A copy on a backup host: the receiving user it is read as (see restore-find.sh); null for root's backups. */
  readAs: string | null;
}

export interface LastVerified {
  verified: string;
  backup: string;
  created: string;
  restoreSeconds: number;
  run: string;
}

/**
 * On the backup host: the chosen backup's manifest (the newest of the database
 * in the directory, or the given dump file's), the host's clock and the record
 * of the last successful verification; `{ error }` when the manifest is unusable.
 */
export function findBackupStep(options: {
  backupDir: string;
  database: string;
  file: string;
}): Step<FoundBackup | { error: string }> {
  return step(
    'finding the backup',
    script(
      ROOT_ONLY_FUNCTION,
      assignments({
        BACKUP_DIR: options.backupDir,
        DATABASE: options.database,
        FILE: options.file,
        LAST_VERIFIED: lastVerifiedPath(options.backupDir),
        RECEIVER: RECEIVER_USER,
        LAST_VERIFIED_COPY: copyVerifiedPath(options.backupDir),
        EXIT_NO_BACKUP: RESTORE_EXIT.noBackup,
      }),
      FIND_SH,
    ),
    (stdout) => {
      const out = keyLines(stdout);
      const dump = out.get('DUMP') ?? '';
      let manifest: BackupManifest;
      try {
        manifest = JSON.parse(out.get('MANIFEST') ?? '') as BackupManifest;
      } catch {
        return { error: `the manifest of ${dump} is not valid JSON` };
      }
      const problems: string[] = [];
      if (typeof manifest.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(manifest.sha256))
        problems.push('sha256');
      if (typeof manifest.size !== 'number') problems.push('size');
      if (typeof manifest.created !== 'string' || Number.isNaN(Date.parse(manifest.created)))
        problems.push('created');
      if (!manifest.tables || typeof manifest.tables !== 'object') problems.push('tables');
      if (problems.length) return { error: `the manifest of ${dump} lacks a valid ${problems.join(', ')}` };
      let lastVerified: LastVerified | null = null;
      try {
        const record = out.get('LAST');
        lastVerified = record ? (JSON.parse(record) as LastVerified) : null;
      } catch {
        // an unreadable record is no record
      }
      return {
        dump,
        size: Number(out.get('SIZE')),
        now: Number(out.get('NOW')),
        manifest,
        lastVerified,
        readAs: out.get('READ_AS') ?? null,
      };
    },
  );
}

/** On the backup host: sends the dump's bytes on stdout, nothing else (for Connection.pipeOut); a copy as its owner. */
export function sendDumpScript(dump: string, readAs: string | null = null): string {
  return script(readAs ? sh`cd / && exec runuser -u ${readAs} -- cat -- ${dump}` : sh`exec cat -- ${dump}`);
}

export interface ScratchOptions {
  scratch: string;
  database: string;
}

/**
 * The role that owns the scratch database and everything restored into it. The
 * backup's objects (index expressions, triggers, policies) are the app's code:
 * they run as this unprivileged login role, never as a superuser (a session
 * that merely SET ROLEs could RESET back).
 */
export interface ScratchRole {
  role: string;
  /** A fresh random password (hex), never printed. */
  password: string;
}

/** A script on the restore host: the settings, the helpers (restore-common.sh), then the step's own bash. */
function onRestoreHost(
  options: ScratchOptions,
  settings: Record<string, string | number | readonly string[]>,
  ...body: string[]
): string {
  if (options.scratch === options.database)
    throw new Error(`the scratch database cannot be the production database (${options.database})`);
  return script(
    assignments({ SCRATCH: options.scratch, MARKER: SCRATCH_MARKER, ...settings }),
    COMMON_SH,
    ...body,
  );
}

/**
 * On the restore host, before anything is copied: the tools are there, and the
 * scratch name is free or a leftover of ours (dropped then). A database of that
 * name that is not ours is refused (RESTORE_EXIT.notOurs).
 */
export function prepareScratchStep(o: ScratchOptions): Step<{ droppedLeftover: boolean }> {
  return step(
    'preparing the scratch database',
    onRestoreHost(o, { EXIT_NOT_OURS: RESTORE_EXIT.notOurs }, PREPARE_SH),
    (stdout) => ({ droppedLeftover: keyLines(stdout).get('DROPPED_LEFTOVER') !== undefined }),
  );
}

export interface Restored {
  /** Bytes received when the dump was sent from another host; null when read in place. */
  received: number | null;
  /** How long pg_restore took. */
  seconds: number;
  /** Why amcheck could not be installed, when it could not. */
  amcheckUnavailable: string | null;
}

/**
 * On the restore host: checks the dump (received on stdin after the script when
 * `receive`, or read in place) against the manifest's size and sha256
 * (RESTORE_EXIT.checksum), creates the scratch role and database, the dump's
 * extensions and amcheck, then restores the rest with --exit-on-error as the
 * scratch role (RESTORE_EXIT.restoreFailed).
 */
export function restoreStep(
  options: ScratchOptions & ScratchRole & { receive: boolean; dump: string; size: number; sha256: string },
): Step<Restored> {
  return step(
    options.receive ? 'receiving and restoring the dump' : 'restoring',
    onRestoreHost(
      options,
      {
        ROLE: options.role,
        PASSWORD: options.password,
        RECEIVE: options.receive ? 1 : 0,
        DUMP_PATH: options.receive ? '' : options.dump,
        WANT_SIZE: options.size,
        WANT_SHA: options.sha256,
        EXIT_CHECKSUM: RESTORE_EXIT.checksum,
        EXIT_RESTORE_FAILED: RESTORE_EXIT.restoreFailed,
      },
      RESTORE_SH,
    ),
    (stdout) => {
      const out = keyLines(stdout);
      const received = out.get('RECEIVED');
      return {
        received: received === undefined ? null : Number(received),
        seconds: Number(out.get('RESTORED') ?? 'NaN'),
        amcheckUnavailable: out.get('AMCHECK_UNAVAILABLE') ?? null,
      };
    },
  );
}

export interface Inspection {
  /** Rows per table, or null when they could not be read. */
  counts: Record<string, number> | null;
  /** The btree indexes amcheck found intact, what it found damaged, or null where amcheck is missing. */
  amcheck: { indexes: number } | { failed: string } | null;
  /** Each check's answer in order: ok when it returned true; the answer otherwise. */
  checks: Array<{ ok: boolean; answer: string }>;
}

/**
 * On the restore host, in the scratch database, as the scratch role: row counts,
 * amcheck of every btree index (with heapallindexed: it evaluates index
 * expressions, the app's code), and each check query.
 */
export function inspectStep(options: ScratchOptions & ScratchRole & { checks: string[] }): Step<Inspection> {
  return step(
    'checking the restored database',
    onRestoreHost(
      options,
      { ROLE: options.role, PASSWORD: options.password, CHECKS: options.checks },
      textVar('COUNTS_SQL', ROW_COUNTS_SQL),
      INSPECT_SH,
    ),
    (stdout) => {
      const out = keyLines(stdout);
      let counts: Record<string, number> | null = null;
      try {
        const parsed = JSON.parse(out.get('COUNTS') ?? '') as unknown;
        if (parsed && typeof parsed === 'object') counts = parsed as Record<string, number>;
      } catch {
        // unreadable: null
      }
      const intact = out.get('AMCHECK');
      const failed = out.get('AMCHECK_FAILED');
      const answers = out.all('CHECK');
      return {
        counts,
        amcheck:
          intact !== undefined ? { indexes: Number(intact) } : failed !== undefined ? { failed } : null,
        checks: options.checks.map((_, i) => {
          const answer = (
            answers.find((a) => a.startsWith(`${i} `))?.slice(String(i).length + 1) ?? 'no result'
          ).trim();
          return { ok: answer === 't', answer: answer === 't' ? 'true' : answer === 'f' ? 'false' : answer };
        }),
      };
    },
  );
}

export interface SmokeOptions extends ScratchOptions, ScratchRole {
  app: string;
  appRoot: string;
  appUser: string;
  appModule: string;
  path: string;
  timeout: number;
}

/** The smoke test's outcome: why it was skipped, or the answer the release gave. */
export type Smoke = { skipped: string } | { status: number; seconds: number };

/**
 * On the restore host: starts the current release's uvicorn on a private Unix
 * socket with only DATABASE_URL set (pointing at the scratch database as the
 * scratch role), waits for the path to answer 200 (else
 * RESTORE_EXIT.smokeFailed), and stops it.
 */
export function smokeStep(options: SmokeOptions): Step<Smoke> {
  return step(
    'the smoke test',
    onRestoreHost(
      options,
      {
        ROLE: options.role,
        PASSWORD: options.password,
        APP_ROOT: options.appRoot,
        APP_USER: options.appUser,
        APP_MODULE: options.appModule,
        SMOKE_PATH: options.path,
        SMOKE_TIMEOUT: options.timeout,
        PROBE_USER,
        EXIT_SMOKE_FAILED: RESTORE_EXIT.smokeFailed,
      },
      pyToolDefinition(),
      SMOKE_SH,
    ),
    (stdout) => {
      const line = keyLines(stdout).get('SMOKE') ?? '';
      if (line.startsWith('skipped')) return { skipped: line };
      const answer = JSON.parse(line) as { status: number; seconds: number };
      return { status: answer.status, seconds: answer.seconds };
    },
  );
}

/**
 * On the restore host, always at the end: drops the scratch database (if ours)
 * and the temporary role. Gives how many of the two are left (null: unreadable).
 */
export function dropScratchStep(o: ScratchOptions & { role: string }): Step<{ left: number | null }> {
  return step('dropping the scratch database', onRestoreHost(o, { ROLE: o.role }, DROP_SH), (stdout) => {
    const left = keyLines(stdout).get('LEFT') ?? '';
    return { left: /^\d+$/.test(left) ? Number(left) : null };
  });
}

/**
 * On the backup host, after a successful verification: the record the next run
 * (and deploys) report; for copies beside their directory, in root's.
 */
export function recordVerifiedStep(backupDir: string, record: LastVerified, copy = false): Step<void> {
  const path = copy ? copyVerifiedPath(backupDir) : lastVerifiedPath(backupDir);
  return plainStep(
    'recording the verification',
    script(
      rootOnly(path.slice(0, path.lastIndexOf('/')) || '/'),
      writeFileAtomic(path, JSON.stringify(record), { mode: '600' }),
    ),
  );
}

/** Compares row counts: every table of the manifest with the same count, and no table more or less. */
export function compareCounts(
  expected: Record<string, number>,
  actual: Record<string, number>,
): { tables: number; rows: number; mismatches: string[] } {
  const mismatches: string[] = [];
  for (const [t, n] of Object.entries(expected)) {
    if (!(t in actual)) mismatches.push(`${t}: in the manifest (${n} rows) but not restored`);
    else if (Number(actual[t]) !== Number(n))
      mismatches.push(`${t}: ${actual[t]} rows restored, the manifest says ${n}`);
  }
  for (const t of Object.keys(actual))
    if (!(t in expected)) mismatches.push(`${t}: restored but not in the manifest`);
  const rows = Object.values(actual).reduce((a, b) => a + Number(b), 0);
  return { tables: Object.keys(actual).length, rows, mismatches };
}
