// backup-verify: proves that a backup restores. Finds the newest backup and its
// manifest on the backup host, copies it to the restore host when that is
// another host (streamed through the runner, checksum verified on arrival),
// restores it into a scratch database with --exit-on-error, compares row counts
// with the manifest, runs amcheck, the checks and a smoke test of the current
// release, and always drops the scratch database and the temporary role.

import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import type { HostSpec } from '../inputs/hosts.js';
import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { openHosts, type Host, type HostResult } from '../stages/hosts.js';
import {
  compareCounts,
  dropScratchScript,
  findBackupScript,
  inspectScript,
  lines,
  parseFound,
  prepareScratchScript,
  recordVerifiedScript,
  restoreScript,
  sendDumpScript,
  smokeScript,
  type FoundBackup,
  type LastVerified,
} from '../remote/restore.js';
import { runAction, type ActionOutcome } from './run.js';

type Status = 'ok' | 'failed' | 'skipped' | 'warning';
interface Row {
  what: string;
  measured: string;
  objective?: string;
  status: Status;
}

const ICON: Record<Status, string> = { ok: '✅', failed: '❌', skipped: '➖', warning: '⚠️' };

export function sameHost(a: HostSpec, b: HostSpec): boolean {
  return a.host === b.host && a.port === b.port && (a.user ?? '') === (b.user ?? '');
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

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

export function recoveryTable(rows: Row[]): string {
  return [
    '| | measured | objective | |',
    '|---|---|---|---|',
    ...rows.map((r) => `| ${cell(r.what)} | ${cell(r.measured)} | ${cell(r.objective ?? '')} | ${ICON[r.status]} |`),
  ].join('\n');
}

export async function backupVerify(s: Settings<'backup-verify'>, log: Log): Promise<ActionOutcome> {
  const backupSpec = s['backup-host']!;
  const restoreSpec = s['restore-host'] ?? backupSpec;
  const same = sameHost(backupSpec, restoreSpec);
  const hosts = await log.group(`Connecting to ${same ? 1 : 2} host(s)`, () =>
    openHosts({ ...s, hosts: same ? [backupSpec] : [backupSpec, restoreSpec], 'lock-timeout': 0 }, log),
  );
  const backup: Host = hosts[0]!;
  const restore: Host = hosts[same ? 0 : 1]!;
  const scratch = s['scratch-database'];
  const role = `metalship_verify_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(24).toString('hex');
  log.secret(password);

  // pg_restore and amcheck print nothing while they work: allow them the whole RTO objective.
  const long = {
    idleTimeoutMs: Math.max(s['command-idle-timeout'], s['max-restore-seconds']) * 1000,
    timeoutMs: Math.max(s['command-timeout'], s['max-restore-seconds']) * 1000,
  };
  const rows: Row[] = [];
  const failures: string[] = [];
  const outputs: Record<string, string> = {
    'backup-file': '',
    'backup-age-hours': '',
    'restore-seconds': '',
    tables: '',
    rows: '',
    verified: 'false',
    'last-verified-hours': '',
  };
  let found = null as FoundBackup | null;
  let scratchTouched = false;
  const fail = (what: string, measured: string, reason: string, objective?: string) => {
    rows.push({ what, measured, objective, status: 'failed' });
    failures.push(reason);
  };

  const steps = async (): Promise<void> => {
    // 1. The backup and its manifest.
    const f = await log.group(`Finding the backup on ${backup.spec.label}`, async () =>
      parseFound(
        (
          await backup.conn.run(
            findBackupScript({ backupDir: s['backup-dir'], database: s.database, file: s['backup-file'] }),
            { what: 'finding the backup' },
          )
        ).stdout,
      ),
    );
    if ('error' in f) {
      fail('backup', 'unusable', f.error);
      return;
    }
    found = f;
    const m = f.manifest;
    outputs['backup-file'] = f.dump;
    if (f.lastVerified) {
      const since = (f.now - Date.parse(f.lastVerified.verified) / 1000) / 3600;
      outputs['last-verified-hours'] = since.toFixed(1);
    }
    rows.push({
      what: 'backup',
      measured: `${f.dump.split('/').pop()}: ${formatBytes(f.size)}, taken ${m.created} (label ${m.label}, PostgreSQL ${m.pg_version})`,
      status: 'ok',
    });
    const ageHours = (f.now - Date.parse(m.created) / 1000) / 3600;
    outputs['backup-age-hours'] = ageHours.toFixed(2);
    if (ageHours > s['max-age-hours']) {
      fail(
        'age (RPO)',
        formatAge(ageHours),
        `${s['backup-file'] ? 'the backup' : 'the newest backup'} ${f.dump} was taken ${m.created}, ${formatAge(ageHours)} ago: older than the RPO objective of ${s['max-age-hours']} h (max-age-hours). Are the daily backups still running?`,
        `≤ ${s['max-age-hours']} h`,
      );
      return;
    }
    rows.push({ what: 'age (RPO)', measured: formatAge(ageHours), objective: `≤ ${s['max-age-hours']} h`, status: 'ok' });

    // 2. The scratch database: free, or a leftover of ours.
    const prep = await restore.conn.run(prepareScratchScript({ scratch, database: s.database }), {
      what: 'preparing the scratch database',
    });
    if (lines(prep.stdout, 'DROPPED_LEFTOVER').length)
      log.warn(`dropped the scratch database ${scratch} a previous run left on ${restore.spec.label}`);
    scratchTouched = true;

    // 3. Copy (when another host), check, restore.
    const started = Date.now();
    const restoreOpts = {
      scratch,
      database: s.database,
      role,
      password,
      dump: f.dump,
      size: m.size,
      sha256: m.sha256,
    };
    let restored;
    try {
      restored = await log.group(
        same
          ? `Restoring ${f.dump} on ${restore.spec.label}`
          : `Copying ${f.dump} from ${backup.spec.label} to ${restore.spec.label} and restoring it`,
        async () => {
          if (same) return restore.conn.run(restoreScript({ ...restoreOpts, receive: false }), { what: 'restoring', ...long });
          const pipe = new PassThrough({ highWaterMark: 1 << 20 });
          const abort = new AbortController();
          const sending = backup.conn.pipeOut(sendDumpScript(f.dump), pipe, {
            what: 'reading the dump',
            signal: abort.signal,
            timeoutMs: long.timeoutMs,
          });
          let received;
          try {
            received = await restore.conn.run(restoreScript({ ...restoreOpts, receive: true }), {
              what: 'receiving and restoring the dump',
              input: pipe,
              ...long,
            });
          } catch (err) {
            abort.abort();
            const sent = await sending;
            if (sent.code !== 0)
              throw new Error(
                `reading ${f.dump} on ${backup.spec.label} failed (exit ${sent.code}): ${sent.stderr.trim()}`,
              );
            throw err;
          }
          const sent = await sending;
          if (sent.code !== 0)
            throw new Error(`reading ${f.dump} on ${backup.spec.label} failed (exit ${sent.code}): ${sent.stderr.trim()}`);
          return received;
        },
      );
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const why = /truncated|sha256/.test(message) ? 'checksum' : 'restore';
      fail(why === 'checksum' ? 'checksum' : 'restore', why === 'checksum' ? 'does not match the manifest' : 'failed', message);
      return;
    }
    const received = lines(restored.stdout, 'RECEIVED')[0];
    rows.push({
      what: 'checksum',
      measured: `sha256 and size match the manifest${received !== undefined ? ` (copied ${formatBytes(Number(received))} from ${backup.spec.label} to ${restore.spec.label} through the runner)` : ''}`,
      status: 'ok',
    });
    const restoreOnly = Number(lines(restored.stdout, 'RESTORED')[0] ?? 'NaN');
    rows.push({
      what: 'pg_restore --exit-on-error',
      measured: `into ${scratch} on ${restore.spec.label} in ${restoreOnly.toFixed(1)} s`,
      status: 'ok',
    });

    // 4. Row counts, amcheck, checks.
    const inspected = await log.group('Checking the restored database', () =>
      restore.conn.run(inspectScript({ scratch, database: s.database, role, password, checks: s.checks }), {
        what: 'checking the restored database',
        ...long,
      }),
    );
    let counts: Record<string, number> = {};
    try {
      counts = JSON.parse(lines(inspected.stdout, 'COUNTS')[0] ?? '') as Record<string, number>;
    } catch {
      fail('row counts', 'unreadable', 'the row counts of the restored database could not be read');
    }
    const cmp = compareCounts(m.tables, counts);
    outputs.tables = String(cmp.tables);
    outputs.rows = String(cmp.rows);
    if (cmp.mismatches.length)
      fail(
        'row counts',
        `${cmp.mismatches.length} of ${Object.keys(m.tables).length} tables differ from the manifest: ${cmp.mismatches.slice(0, 5).join('; ')}`,
        `the restored data disagrees with the backup's manifest: ${cmp.mismatches.join('; ')}`,
      );
    else
      rows.push({
        what: 'row counts',
        measured: `${cmp.tables} tables, ${cmp.rows} rows, each as in the manifest`,
        status: 'ok',
      });
    const am = lines(inspected.stdout, 'AMCHECK')[0];
    const amFailed = lines(inspected.stdout, 'AMCHECK_FAILED')[0];
    const amMissing = lines(restored.stdout, 'AMCHECK_UNAVAILABLE')[0];
    if (am !== undefined) rows.push({ what: 'amcheck', measured: `${am} btree indexes (heapallindexed) intact`, status: 'ok' });
    else if (amFailed !== undefined) fail('amcheck', amFailed, `amcheck found a damaged index: ${amFailed}`);
    else {
      rows.push({ what: 'amcheck', measured: `not available on ${restore.spec.label}: ${amMissing ?? ''}`, status: 'warning' });
      log.warn(`amcheck is not available on ${restore.spec.label}; indexes were not checked`);
    }
    s.checks.forEach((q, i) => {
      const out = lines(inspected.stdout, 'CHECK').find((l) => l.startsWith(`${i} `))?.slice(String(i).length + 1) ?? 'no result';
      const ok = out.trim() === 't';
      if (ok) rows.push({ what: `check \`${q}\``, measured: 'true', status: 'ok' });
      else fail(`check \`${q}\``, out.trim() === 'f' ? 'false' : out, `check failed: ${q} returned ${out.trim() === 'f' ? 'false' : out}`);
    });

    // The RTO: from the first byte copied to the last check.
    const seconds = (Date.now() - started) / 1000;
    outputs['restore-seconds'] = seconds.toFixed(1);
    if (seconds > s['max-restore-seconds'])
      fail(
        'restore and checks (RTO)',
        `${seconds.toFixed(1)} s`,
        `copying, restoring and checking took ${seconds.toFixed(1)} s: longer than the RTO objective of ${s['max-restore-seconds']} s (max-restore-seconds)`,
        `≤ ${s['max-restore-seconds']} s`,
      );
    else
      rows.push({
        what: 'restore and checks (RTO)',
        measured: `${seconds.toFixed(1)} s`,
        objective: `≤ ${s['max-restore-seconds']} s`,
        status: 'ok',
      });

    // 5. The application against the restored data.
    if (!s.smoke) rows.push({ what: 'smoke test', measured: 'off (smoke: false)', status: 'skipped' });
    else {
      try {
        const r = await log.group(`Starting the current release on ${restore.spec.label} against ${scratch}`, () =>
          restore.conn.run(
            smokeScript({
              scratch,
              database: s.database,
              app: s.app,
              appRoot: s['app-root'],
              appUser: s['app-user'],
              appModule: s['app-module'],
              path: s['smoke-path'],
              timeout: s['smoke-timeout'],
              password,
              role,
            }),
            { what: 'the smoke test' },
          ),
        );
        const line = lines(r.stdout, 'SMOKE')[0] ?? '';
        if (line.startsWith('skipped')) {
          rows.push({ what: 'smoke test', measured: line, status: 'skipped' });
          log.info(`smoke test ${line}`);
        } else {
          const j = JSON.parse(line) as { status: number; seconds: number };
          rows.push({
            what: 'smoke test',
            measured: `current release answered GET ${s['smoke-path']} with ${j.status} after ${j.seconds.toFixed(1)} s`,
            status: 'ok',
          });
        }
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        fail('smoke test', `GET ${s['smoke-path']} failed`, `the smoke test failed: ${message}`);
      }
    }
  };

  try {
    await steps();
  } catch (err) {
    fail('run', 'stopped', err instanceof Error ? err.message : String(err));
  } finally {
    if (scratchTouched) {
      try {
        const r = await restore.conn.run(dropScratchScript({ scratch, database: s.database, role }), {
          what: 'dropping the scratch database',
        });
        const left = lines(r.stdout, 'LEFT')[0];
        if (left === '0')
          rows.push({ what: 'clean-up', measured: `${scratch} and the temporary role dropped`, status: 'ok' });
        else
          fail('clean-up', `${left ?? '?'} left`, `the scratch database ${scratch} or the role ${role} is still there after dropping`);
      } catch (err) {
        fail('clean-up', 'failed', err instanceof Error ? err.message : String(err));
      }
    }
  }
  const verified = failures.length === 0 && found !== null;
  outputs.verified = String(verified);
  try {
    if (verified && found) {
      const record: LastVerified = {
        verified: new Date(found.now * 1000).toISOString(),
        backup: found.dump,
        created: found.manifest.created,
        restoreSeconds: Number(outputs['restore-seconds']),
        run: process.env.GITHUB_RUN_ID
          ? `${process.env.GITHUB_SERVER_URL ?? 'https://github.com'}/${process.env.GITHUB_REPOSITORY}/actions/runs/${process.env.GITHUB_RUN_ID}`
          : '',
      };
      await backup.conn.run(recordVerifiedScript(s['backup-dir'], record), { what: 'recording the verification' });
    }
  } finally {
    await Promise.all(hosts.map((h) => h.conn.close()));
  }

  const prev = found?.lastVerified;
  const previous = prev
    ? `Previous successful verification: ${formatAge(Number(outputs['last-verified-hours']))} ago (${prev.verified}, of the backup taken ${prev.created}).`
    : 'No earlier successful verification is recorded on the backup host.';
  const where = same
    ? `restored on ${restore.spec.label} itself, into the scratch database ${scratch}`
    : `restored on ${restore.spec.label}, into the scratch database ${scratch}`;
  const summary =
    `### Recovery report: database ${s.database} on ${backup.spec.label}, ${where}\n\n` +
    `${verified ? '**The backup restores.**' : '**The backup is NOT proven to restore.**'} ${previous}\n\n` +
    recoveryTable(rows);
  const results: HostResult[] = [
    { host: backup.spec.label, ok: verified, role: 'backup', backup: outputs['backup-file'] },
    ...(same ? [] : [{ host: restore.spec.label, ok: verified, role: 'restore' }]),
  ];
  return { outputs, results, summary, failure: verified ? undefined : failures.join('\n') || 'not verified' };
}

export const run = () => runAction('backup-verify', backupVerify);
