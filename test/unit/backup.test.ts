import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  BACKUP_NAME_RE,
  ROW_COUNTS_SQL,
  backupInstallScript,
  backupNowScript,
  backupProgram,
  lastVerifiedScript,
  parseBackupPath,
  verificationWarning,
} from '../../src/remote/backup.js';

const OPTS = { app: 'shop', database: 'shop', backupDir: '/var/backups/metalship/shop', retentionDays: 30 };

function parses(text: string): void {
  const r = spawnSync('bash', ['-n'], { input: text, encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
}

const HOSTILE_DIRS = [
  `/srv/it's here`,
  '/srv/$(touch /tmp/pwned)',
  '/srv/`id`',
  '/srv/x; rm -rf /',
  '/srv/"dq" $HOME *',
  '/srv/-n',
];

describe('backup program', () => {
  test('dumps with pg_dump -Fc in the snapshot its row counts were taken in, and writes the manifest last', () => {
    const p = backupProgram(OPTS);
    parses(p);
    expect(p.startsWith('#!/bin/bash\n')).toBe(true);
    expect(p).toContain('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;');
    expect(p).toContain('pg_export_snapshot()');
    expect(p).toContain('pg_dump -Fc --snapshot="$snap"');
    expect(p).toContain('pg_dumpall --globals-only');
    expect(p).toContain('umask 077');
    expect(p).toContain('chmod 700 -- "$DIR"');
    const dumpMove = p.indexOf('mv -f -- "$tmp_dump" "$dump"');
    const manifestMove = p.indexOf('mv -f -- "$tmp_manifest" "$manifest"');
    const dumpCall = p.indexOf('pg_dump -Fc');
    const counts = p.indexOf('printf \'%s\\n\' "$counts_sql" >&6');
    expect(counts).toBeGreaterThan(0);
    expect(dumpCall).toBeGreaterThan(counts);
    expect(dumpMove).toBeGreaterThan(dumpCall);
    expect(manifestMove).toBeGreaterThan(dumpMove);
    // retention in minutes, only this database's files
    expect(p).toContain('-mmin "+$(( RETENTION_DAYS * 1440 ))"');
    expect(p).toContain('RETENTION_DAYS=30');
    // the last thing printed is the path
    expect(p.trimEnd().split('\n').pop()).toBe(`printf '%s\\n' "$dump"`);
  });

  test.each(HOSTILE_DIRS)('a hostile backup directory %j is one literal value', (dir) => {
    const p = backupProgram({ ...OPTS, backupDir: dir });
    parses(p);
    const line = p.split('\n').find((l) => l.startsWith('DIR='))!;
    expect(execFileSync('bash', ['-c', `${line}\nprintf '%s' "$DIR"`], { encoding: 'utf8' })).toBe(dir);
  });

  test('a hostile label is refused by the program before it touches anything', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ms-backup-'));
    try {
      const prog = path.join(dir, 'prog');
      writeFileSync(prog, backupProgram({ ...OPTS, backupDir: path.join(dir, 'backups') }));
      for (const label of ['$(touch ' + dir + '/pwned)', 'a b', '../x', '-rf', 'x/y']) {
        const r = spawnSync('bash', [prog, label], { encoding: 'utf8' });
        expect(r.status).toBe(1);
        expect(r.stderr).toMatch(/label .* is invalid/);
      }
      expect(existsSync(path.join(dir, 'pwned'))).toBe(false);
      expect(existsSync(path.join(dir, 'backups'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('names it cannot use safely are refused when the script is built', () => {
    expect(() => backupProgram({ ...OPTS, database: 'shop; drop' })).toThrow(/database/);
    expect(() => backupProgram({ ...OPTS, database: '-shop' })).toThrow(/database/);
    expect(() => backupProgram({ ...OPTS, database: 'a'.repeat(64) })).toThrow(/database/);
    expect(() => backupProgram({ ...OPTS, app: 'Shop App' })).toThrow(/app/);
    expect(() => backupProgram({ ...OPTS, backupDir: 'relative' })).toThrow(/absolute/);
    expect(() => backupProgram({ ...OPTS, backupDir: '/' })).toThrow(/absolute/);
    expect(() => backupProgram({ ...OPTS, backupDir: '/srv/../etc' })).toThrow(/absolute/);
    expect(() => backupProgram({ ...OPTS, retentionDays: 0 })).toThrow(/retention/);
    expect(() => backupProgram({ ...OPTS, retentionDays: 1.5 })).toThrow(/retention/);
    expect(() => backupInstallScript({ ...OPTS, onCalendar: 'daily\nExecStart=/bin/sh' })).toThrow(
      /OnCalendar/,
    );
    expect(() => backupNowScript(OPTS, 'pre migrate')).toThrow(/label/);
  });

  test('the backup file names parse back, labels with underscores included', () => {
    const m = BACKUP_NAME_RE.exec('shop_db_20260101T020304Z_pre-migrate-20260101_020000.dump');
    expect(m?.slice(1)).toEqual(['shop_db', '20260101T020304Z', 'pre-migrate-20260101_020000']);
    expect(BACKUP_NAME_RE.test('shop_20260101T020304Z_daily.manifest.json')).toBe(false);
  });

  test('row counts skip catalogs and extension members, and quote identifiers', () => {
    expect(ROW_COUNTS_SQL).toContain("format('SELECT count(*) AS c FROM %I.%I'");
    expect(ROW_COUNTS_SQL).toContain("deptype = 'e'");
    expect(ROW_COUNTS_SQL).toContain("c.relkind = 'r'");
  });
});

describe('backup install', () => {
  test('installs program, oneshot service and a persistent randomized daily timer, reporting changes', () => {
    const s = backupInstallScript(OPTS);
    parses(s);
    expect(s).toContain('/usr/local/sbin/metalship-backup-shop');
    expect(s).toContain('/etc/systemd/system/metalship-backup-shop.service');
    expect(s).toContain('Type=oneshot');
    expect(s).toContain('ExecStart=/usr/local/sbin/metalship-backup-shop daily');
    expect(s).toContain('OnCalendar=daily');
    expect(s).toContain('Persistent=true');
    expect(s).toMatch(/RandomizedDelaySec=\S+/);
    expect(s).toContain('WantedBy=timers.target');
    expect(s).toContain('changed metalship-backup-shop.timer');
    expect(backupInstallScript({ ...OPTS, onCalendar: '*-*-* 03:00:00' })).toContain(
      'OnCalendar=*-*-* 03:00:00',
    );
  });

  test('is quiet when nothing changed: every echo is behind a check', () => {
    const s = backupInstallScript(OPTS);
    for (const line of s.split('\n').filter((l) => /echo .*changed/.test(l))) {
      expect(line).toMatch(/^(if |sh|.*then)/);
    }
  });
});

describe('backup now', () => {
  test('runs the installed program, or the same program inline, with the label', () => {
    const s = backupNowScript(OPTS, 'pre-migrate-20260101_000000');
    parses(s);
    expect(s).toContain('/usr/local/sbin/metalship-backup-shop pre-migrate-20260101_000000');
    expect(s).toContain(backupProgram(OPTS).trimEnd());
    expect(parseBackupPath('noise\n/var/backups/x.dump\n')).toBe('/var/backups/x.dump');
  });
});

describe('the last restore test, for deploy warnings', () => {
  test('warns when none is recorded, when it is unreadable, or older than the limit', () => {
    const now = Date.parse('2026-03-01T00:00:00Z') / 1000;
    const rec = (iso: string) => `LAST_VERIFIED {"verified":"${iso}"}\nNOW ${now}\n`;
    expect(verificationWarning(`NOW ${now}\n`)).toMatch(/no restore test/);
    expect(verificationWarning(`LAST_VERIFIED {oops\nNOW ${now}\n`)).toMatch(/unreadable/);
    expect(verificationWarning(rec('2026-02-01T00:00:00Z'))).toBeNull();
    expect(verificationWarning(rec('2025-12-01T00:00:00Z'))).toMatch(/90 days ago/);
    expect(lastVerifiedScript("/srv/it's")).toContain(`f='/srv/it'\\''s/.last-verified.json'`);
  });
});
