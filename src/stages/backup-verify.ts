// The backup-verify stage: proves that a backup restores. Finds the newest
// backup and its manifest on the backup host, copies it to the restore host when
// that is another host (streamed through the runner, checksum verified on
// arrival), restores it into a scratch database with --exit-on-error, compares
// row counts with the manifest, runs amcheck, the checks and a smoke test of the
// current release, and always drops the scratch database and the temporary role.
// Each part returns its rows of the recovery report; restoreTest calls them in
// a straight line and stops where a part says the test cannot go on.

import { errorMessage } from '../errors.js';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import type { HostSpec } from '../inputs/hosts.js';
import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import {
  RESTORE_EXIT,
  compareCounts,
  dropScratchStep,
  findBackupStep,
  inspectStep,
  prepareScratchStep,
  recordVerifiedStep,
  restoreStep,
  sendDumpScript,
  smokeStep,
  type FoundBackup,
  type Restored,
  type ScratchOptions,
  type ScratchRole,
} from '../remote/restore.js';
import type { BackupManifest } from '../remote/backup.js';
import { RemoteError } from '../transport/ssh.js';
import { openHosts, type Host, type HostResult } from './hosts.js';

export type Status = 'ok' | 'failed' | 'skipped' | 'warning';

/** A row of the recovery report; a failed one carries the reason the job fails with. */
export interface Row {
  what: string;
  measured: string;
  objective?: string;
  status: Status;
  reason?: string;
}

function ok(what: string, measured: string, objective?: string): Row {
  return { what, measured, objective, status: 'ok' };
}

function failed(what: string, measured: string, reason: string, objective?: string): Row {
  return { what, measured, objective, status: 'failed', reason };
}

/** A part of the test: its rows, and whether the test stops after it. */
interface Part {
  rows: Row[];
  stop?: boolean;
}

/** A part that threw: the test stops there, the reason in a `run` row. */
function stopped<T extends object>(empty: T): (err: unknown) => Part & T {
  return (err) => ({ ...empty, rows: [failed('run', 'stopped', errorMessage(err))], stop: true });
}

/** One restore test's hosts and settings. */
export interface RestoreRun {
  settings: Settings<'backup-verify'>;
  log: Log;
  backup: Host;
  restore: Host;
  /** The backup is restored on the host it is on. */
  same: boolean;
  scratch: ScratchOptions & ScratchRole;
  /** pg_restore and amcheck print nothing while they work: they get the whole RTO objective. */
  long: { idleTimeoutMs: number; timeoutMs: number };
}

export interface RestoreTest {
  /** The recovery report's rows, in order. */
  rows: Row[];
  found: FoundBackup | null;
  ageHours: number | null;
  /** Copying, restoring and checking (the RTO measured), when they all ran. */
  seconds: number | null;
  counts: { tables: number; rows: number } | null;
  verified: boolean;
}

export function sameHost(a: HostSpec, b: HostSpec): boolean {
  return a.host === b.host && a.port === b.port && (a.user ?? '') === (b.user ?? '');
}

/** Connects to the backup host and the restore host (one connection when they are the same) for fn. */
export async function withRestoreHosts<T>(
  settings: Settings<'backup-verify'>,
  log: Log,
  fn: (run: RestoreRun) => Promise<T>,
): Promise<T> {
  const backupSpec = settings['backup-host']!;
  const restoreSpec = settings['restore-host'] ?? backupSpec;
  const same = sameHost(backupSpec, restoreSpec);
  const hosts = await log.group(`Connecting to ${same ? 1 : 2} host(s)`, () =>
    openHosts(
      { ...settings, hosts: same ? [backupSpec] : [backupSpec, restoreSpec], 'lock-timeout': 0 },
      log,
    ),
  );
  const password = randomBytes(24).toString('hex');
  log.secret(password);
  try {
    return await fn({
      settings,
      log,
      backup: hosts[0]!,
      restore: hosts[same ? 0 : 1]!,
      same,
      scratch: {
        scratch: settings['scratch-database'],
        database: settings.database,
        role: `metalship_verify_${randomBytes(4).toString('hex')}`,
        password,
      },
      long: {
        idleTimeoutMs: Math.max(settings['command-idle-timeout'], settings['max-restore-seconds']) * 1000,
        timeoutMs: Math.max(settings['command-timeout'], settings['max-restore-seconds']) * 1000,
      },
    });
  } finally {
    await Promise.all(hosts.map((h) => h.conn.close()));
  }
}

/** The whole test: find, prepare, restore and check, clean up. */
export async function restoreTest(run: RestoreRun): Promise<RestoreTest> {
  const found = await findBackup(run).catch(stopped({ found: null, ageHours: null }));
  const measured = { found: found.found, ageHours: found.ageHours, seconds: null, counts: null };
  if (found.stop || !found.found) return finish(measured, [found]);
  const prepared = await prepareScratch(run).catch(stopped({}));
  // Nothing was created yet: nothing to clean up.
  if (prepared.stop) return finish(measured, [found, prepared]);
  const tested = await testRestore(run, found.found);
  const cleaned = await dropScratch(run);
  return finish({ ...measured, seconds: tested.seconds, counts: tested.counts }, [
    found,
    ...tested.parts,
    cleaned,
  ]);
}

function finish(measured: Omit<RestoreTest, 'rows' | 'verified'>, parts: Part[]): RestoreTest {
  const rows = parts.flatMap((p) => p.rows);
  return { ...measured, rows, verified: measured.found !== null && !rows.some((r) => r.status === 'failed') };
}

/** Restore, inspect, the RTO, the smoke test; the time from the first byte copied to the last check. */
async function testRestore(
  run: RestoreRun,
  found: FoundBackup,
): Promise<{ parts: Part[]; seconds: number | null; counts: RestoreTest['counts'] }> {
  const started = Date.now();
  const restored = await restoreDump(run, found);
  if (restored.stop || !restored.restored) return { parts: [restored], seconds: null, counts: null };
  const inspected = await inspectRestored(run, found.manifest, restored.restored).catch(
    stopped({ counts: null }),
  );
  if (inspected.stop) return { parts: [restored, inspected], seconds: null, counts: inspected.counts };
  const rto = rtoPart(run, started);
  const smoke = await smokeTest(run);
  return { parts: [restored, inspected, rto, smoke], seconds: rto.seconds, counts: inspected.counts };
}

/** How far ahead of the backup host's clock a backup's time may be (the hosts' clocks differ a little). */
const FUTURE_SKEW_HOURS = 5 / 60;

/** 1. The backup and its manifest, and its age against the RPO objective. */
async function findBackup(
  run: RestoreRun,
): Promise<Part & { found: FoundBackup | null; ageHours: number | null }> {
  const { settings, backup } = run;
  const found = await run.log.group(`Finding the backup on ${backup.spec.label}`, () =>
    backup.conn.step(
      findBackupStep({
        backupDir: settings['backup-dir'],
        database: settings.database,
        file: settings['backup-file'],
      }),
    ),
  );
  if ('error' in found)
    return { rows: [failed('backup', 'unusable', found.error)], stop: true, found: null, ageHours: null };
  // A backup host's copies are restored elsewhere: it runs no PostgreSQL of the app's.
  if (found.readAs && run.same)
    return {
      rows: [
        failed(
          'backup',
          `a copy on the backup host ${backup.spec.label}`,
          `${found.dump} is a copy on the backup host (roles=backup), which has no PostgreSQL for the test: set restore-host to a host with PostgreSQL (e.g. the new database host)`,
        ),
      ],
      stop: true,
      found: null,
      ageHours: null,
    };
  const manifest = found.manifest;
  const backupRow = ok(
    'backup',
    `${found.dump.split('/').pop()}: ${formatBytes(found.size)}, taken ${manifest.created} (label ${manifest.label}, PostgreSQL ${manifest.pg_version})`,
  );
  const ageHours = (found.now - Date.parse(manifest.created) / 1000) / 3600;
  const objective = `≤ ${settings['max-age-hours']} h`;
  // A backup taken after now is no backup of ours: its stamp was forged, or a clock is wrong.
  if (ageHours < -FUTURE_SKEW_HOURS)
    return {
      rows: [
        backupRow,
        failed(
          'age (RPO)',
          'in the future',
          `${found.dump} says it was taken ${manifest.created}, ${formatAge(-ageHours)} after the clock of ${backup.spec.label}: a backup cannot be newer than now (a forged copy, or a host's clock is wrong)`,
          objective,
        ),
      ],
      stop: true,
      found,
      ageHours,
    };
  if (ageHours > settings['max-age-hours'])
    return {
      rows: [
        backupRow,
        failed(
          'age (RPO)',
          formatAge(ageHours),
          `${settings['backup-file'] ? 'the backup' : 'the newest backup'} ${found.dump} was taken ${manifest.created}, ${formatAge(ageHours)} ago: older than the RPO objective of ${settings['max-age-hours']} h (max-age-hours). Are the daily backups still running?`,
          objective,
        ),
      ],
      stop: true,
      found,
      ageHours,
    };
  return { rows: [backupRow, ok('age (RPO)', formatAge(ageHours), objective)], found, ageHours };
}

/** 2. The scratch database: free, or a leftover of ours (dropped). */
async function prepareScratch(run: RestoreRun): Promise<Part> {
  const prepared = await run.restore.conn.step(prepareScratchStep(run.scratch));
  if (prepared.droppedLeftover)
    run.log.warn(
      `dropped the scratch database ${run.scratch.scratch} a previous run left on ${run.restore.spec.label}`,
    );
  return { rows: [] };
}

/** 3. Copy (when another host), check against the manifest, restore. */
async function restoreDump(
  run: RestoreRun,
  found: FoundBackup,
): Promise<Part & { restored: Restored | null }> {
  const { backup, restore, same } = run;
  try {
    const restored = await run.log.group(
      same
        ? `Restoring ${found.dump} on ${restore.spec.label}`
        : `Copying ${found.dump} from ${backup.spec.label} to ${restore.spec.label} and restoring it`,
      () =>
        same
          ? restore.conn.step(restoreStep({ ...restoreOptions(run, found), receive: false }), run.long)
          : copyAndRestore(run, found),
    );
    const copied =
      restored.received === null
        ? ''
        : ` (copied ${formatBytes(restored.received)} from ${backup.spec.label} to ${restore.spec.label} through the runner)`;
    return {
      rows: [
        ok('checksum', `sha256 and size match the manifest${copied}`),
        ok(
          'pg_restore --exit-on-error',
          `into ${run.scratch.scratch} on ${restore.spec.label} in ${restored.seconds.toFixed(1)} s`,
        ),
      ],
      restored,
    };
  } catch (err) {
    const checksum = err instanceof RemoteError && err.code === RESTORE_EXIT.checksum;
    const row = checksum
      ? failed('checksum', 'does not match the manifest', errorMessage(err))
      : failed('restore', 'failed', errorMessage(err));
    return { rows: [row], stop: true, restored: null };
  }
}

function restoreOptions(run: RestoreRun, found: FoundBackup) {
  return { ...run.scratch, dump: found.dump, size: found.manifest.size, sha256: found.manifest.sha256 };
}

/** The dump streamed from the backup host through the runner into the restore step. */
async function copyAndRestore(run: RestoreRun, found: FoundBackup): Promise<Restored> {
  const pipe = new PassThrough({ highWaterMark: 1 << 20 });
  const abort = new AbortController();
  const sending = run.backup.conn.pipeOut(sendDumpScript(found.dump, found.readAs), pipe, {
    what: 'reading the dump',
    signal: abort.signal,
    timeoutMs: run.long.timeoutMs,
  });
  const restoring = run.restore.conn
    .step(restoreStep({ ...restoreOptions(run, found), receive: true }), { input: pipe, ...run.long })
    .catch((err: unknown) => {
      abort.abort();
      throw err;
    });
  const [sent, restored] = await Promise.allSettled([sending, restoring]);
  // A failed read explains a failed restore: it is the one reported.
  if (sent.status === 'rejected') throw sent.reason;
  if (sent.value.code !== 0)
    throw new Error(
      `reading ${found.dump} on ${run.backup.spec.label} failed (exit ${sent.value.code}): ${sent.value.stderr.trim()}`,
    );
  if (restored.status === 'rejected') throw restored.reason;
  return restored.value;
}

/** 4. Row counts against the manifest, amcheck, the checks. */
async function inspectRestored(
  run: RestoreRun,
  manifest: BackupManifest,
  restored: Restored,
): Promise<Part & { counts: RestoreTest['counts'] }> {
  const { settings, restore, log } = run;
  const inspection = await log.group('Checking the restored database', () =>
    restore.conn.step(inspectStep({ ...run.scratch, checks: settings.checks }), run.long),
  );
  const compared = inspection.counts && compareCounts(manifest.tables, inspection.counts);
  const countsRow = !compared
    ? failed('row counts', 'unreadable', 'the row counts of the restored database could not be read')
    : compared.mismatches.length
      ? failed(
          'row counts',
          `${compared.mismatches.length} of ${Object.keys(manifest.tables).length} tables differ from the manifest: ${compared.mismatches.slice(0, 5).join('; ')}`,
          `the restored data disagrees with the backup's manifest: ${compared.mismatches.join('; ')}`,
        )
      : ok('row counts', `${compared.tables} tables, ${compared.rows} rows, each as in the manifest`);
  const amcheck = inspection.amcheck;
  if (amcheck === null)
    log.warn(`amcheck is not available on ${restore.spec.label}; indexes were not checked`);
  const amcheckRow: Row =
    amcheck === null
      ? {
          what: 'amcheck',
          measured: `not available on ${restore.spec.label}: ${restored.amcheckUnavailable ?? ''}`,
          status: 'warning',
        }
      : 'failed' in amcheck
        ? failed('amcheck', amcheck.failed, `amcheck found a damaged index: ${amcheck.failed}`)
        : ok('amcheck', `${amcheck.indexes} btree indexes (heapallindexed) intact`);
  const checkRows = settings.checks.map((query, i) => {
    const check = inspection.checks[i]!;
    return check.ok
      ? ok(`check \`${query}\``, 'true')
      : failed(`check \`${query}\``, check.answer, `check failed: ${query} returned ${check.answer}`);
  });
  return {
    rows: [countsRow, amcheckRow, ...checkRows],
    counts: compared ? { tables: compared.tables, rows: compared.rows } : null,
  };
}

/** The RTO: from the first byte copied to the last check. */
function rtoPart(run: RestoreRun, started: number): Part & { seconds: number } {
  const seconds = (Date.now() - started) / 1000;
  const max = run.settings['max-restore-seconds'];
  const measured = `${seconds.toFixed(1)} s`;
  const row =
    seconds > max
      ? failed(
          'restore and checks (RTO)',
          measured,
          `copying, restoring and checking took ${measured}: longer than the RTO objective of ${max} s (max-restore-seconds)`,
          `≤ ${max} s`,
        )
      : ok('restore and checks (RTO)', measured, `≤ ${max} s`);
  return { rows: [row], seconds };
}

/** 5. The application against the restored data. */
async function smokeTest(run: RestoreRun): Promise<Part> {
  const { settings, restore, log } = run;
  if (!settings.smoke)
    return { rows: [{ what: 'smoke test', measured: 'off (smoke: false)', status: 'skipped' }] };
  try {
    const smoke = await log.group(
      `Starting the current release on ${restore.spec.label} against ${run.scratch.scratch}`,
      () =>
        restore.conn.step(
          smokeStep({
            ...run.scratch,
            app: settings.app,
            appRoot: settings['app-root'],
            appUser: settings['app-user'],
            appModule: settings['app-module'],
            path: settings['smoke-path'],
            timeout: settings['smoke-timeout'],
          }),
        ),
    );
    if ('skipped' in smoke) {
      log.info(`smoke test ${smoke.skipped}`);
      return { rows: [{ what: 'smoke test', measured: smoke.skipped, status: 'skipped' }] };
    }
    return {
      rows: [
        ok(
          'smoke test',
          `current release answered GET ${settings['smoke-path']} with ${smoke.status} after ${smoke.seconds.toFixed(1)} s`,
        ),
      ],
    };
  } catch (err) {
    return {
      rows: [
        failed(
          'smoke test',
          `GET ${settings['smoke-path']} failed`,
          `the smoke test failed: ${errorMessage(err)}`,
        ),
      ],
    };
  }
}

/** 6. Always, once the scratch database was prepared: drop it and the role. */
async function dropScratch(run: RestoreRun): Promise<Part> {
  const { scratch, role } = run.scratch;
  try {
    const { left } = await run.restore.conn.step(dropScratchStep(run.scratch));
    return {
      rows: [
        left === 0
          ? ok('clean-up', `${scratch} and the temporary role dropped`)
          : failed(
              'clean-up',
              `${left ?? '?'} left`,
              `the scratch database ${scratch} or the role ${role} is still there after dropping`,
            ),
      ],
    };
  } catch (err) {
    return { rows: [failed('clean-up', 'failed', errorMessage(err))] };
  }
}

/** 7. After a successful test: the record on the backup host that the next run (and deploys) report. */
export async function recordVerification(run: RestoreRun, test: RestoreTest): Promise<void> {
  const found = test.found;
  if (!test.verified || !found) return;
  const e = process.env;
  await run.backup.conn.step(
    recordVerifiedStep(
      run.settings['backup-dir'],
      {
        verified: new Date(found.now * 1000).toISOString(),
        backup: found.dump,
        created: found.manifest.created,
        restoreSeconds: Number(restoreOutputs(test)['restore-seconds']),
        run: e.GITHUB_RUN_ID
          ? `${e.GITHUB_SERVER_URL ?? 'https://github.com'}/${e.GITHUB_REPOSITORY}/actions/runs/${e.GITHUB_RUN_ID}`
          : '',
      },
      found.readAs !== null,
    ),
  );
}

/** The action's outputs. */
export function restoreOutputs(test: RestoreTest): Record<string, string> {
  const found = test.found;
  return {
    'backup-file': found?.dump ?? '',
    'backup-age-hours': test.ageHours?.toFixed(2) ?? '',
    'restore-seconds': test.seconds?.toFixed(1) ?? '',
    tables: test.counts ? String(test.counts.tables) : '',
    rows: test.counts ? String(test.counts.rows) : '',
    verified: String(test.verified),
    'last-verified-hours': found?.lastVerified
      ? ((found.now - Date.parse(found.lastVerified.verified) / 1000) / 3600).toFixed(1)
      : '',
  };
}

/** One result per host: the backup host, and the restore host when it is another. */
export function restoreResults(run: RestoreRun, test: RestoreTest): HostResult[] {
  return [
    { host: run.backup.spec.label, ok: test.verified, role: 'backup', backup: test.found?.dump ?? '' },
    ...(run.same ? [] : [{ host: run.restore.spec.label, ok: test.verified, role: 'restore' }]),
  ];
}

/** The job summary: the recovery report. */
export function recoveryReport(run: RestoreRun, test: RestoreTest): string {
  const previousRecord = test.found?.lastVerified;
  const previous = previousRecord
    ? `Previous successful verification: ${formatAge(Number(restoreOutputs(test)['last-verified-hours']))} ago (${previousRecord.verified}, of the backup taken ${previousRecord.created}).`
    : 'No earlier successful verification is recorded on the backup host.';
  const where = `restored on ${run.restore.spec.label}${run.same ? ' itself' : ''}, into the scratch database ${run.scratch.scratch}`;
  return (
    `### Recovery report: database ${run.settings.database} on ${run.backup.spec.label}, ${where}\n\n` +
    `${test.verified ? '**The backup restores.**' : '**The backup is NOT proven to restore.**'} ${previous}\n\n` +
    recoveryTable(test.rows)
  );
}

/** Why the test failed: the reasons of its failed rows, in order. */
export function restoreFailure(test: RestoreTest): string | undefined {
  if (test.verified) return undefined;
  return test.rows.flatMap((r) => (r.reason ? [r.reason] : [])).join('\n') || 'not verified';
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

export function formatAge(hours: number): string {
  if (hours < 1) return `${Math.round(hours * 60)} min`;
  if (hours < 48) return `${hours.toFixed(1)} h`;
  return `${(hours / 24).toFixed(1)} days`;
}

const ICON: Record<Status, string> = { ok: '✅', failed: '❌', skipped: '➖', warning: '⚠️' };

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

export function recoveryTable(rows: Row[]): string {
  return [
    '| | measured | objective | |',
    '|---|---|---|---|',
    ...rows.map(
      (r) => `| ${cell(r.what)} | ${cell(r.measured)} | ${cell(r.objective ?? '')} | ${ICON[r.status]} |`,
    ),
  ].join('\n');
}
