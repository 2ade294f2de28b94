import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  BACKUP_NAME_RE,
  ROW_COUNTS_SQL,
  backupInstallScript,
  backupNowStep,
  backupProgram,
  restoreProofStep,
} from '../../src/remote/backup.js';
import { wrapScript } from '../../src/remote/session.js';
import { rootSandbox } from '../support/sandbox.js';

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
    const counts = p.indexOf('printf \'%s\\n\' "$COUNTS_SQL" >&6');
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
    expect(() => backupNowStep(OPTS, 'pre migrate')).toThrow(/label/);
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
    const settings = backupInstallScript(OPTS);
    parses(settings);
    expect(settings).toContain('/usr/local/sbin/metalship-backup-shop');
    expect(settings).toContain('/etc/systemd/system/metalship-backup-shop.service');
    expect(settings).toContain('Type=oneshot');
    expect(settings).toContain('ExecStart=/usr/local/sbin/metalship-backup-shop daily');
    expect(settings).toContain('OnCalendar=daily');
    expect(settings).toContain('Persistent=true');
    expect(settings).toMatch(/RandomizedDelaySec=\S+/);
    expect(settings).toContain('WantedBy=timers.target');
    expect(settings).toContain('changed metalship-backup-shop.timer');
    expect(backupInstallScript({ ...OPTS, onCalendar: '*-*-* 03:00:00' })).toContain(
      'OnCalendar=*-*-* 03:00:00',
    );
  });

  test('is quiet when nothing changed: every echo is behind a check', () => {
    const s = backupInstallScript(OPTS);
    // On the line of its check, or the last line of the else branch that
    // closes it (ensureFile: `...; echo changed ...; fi`).
    for (const line of s.split('\n').filter((l) => /echo .*changed/.test(l))) {
      expect(line).toMatch(/^(if |sh|.*then)|; fi$/);
    }
  });
});

/**
 * Stand-ins for runuser (as postgres) and the PostgreSQL tools: psql answers the
 * backup's snapshot transaction line by line, pg_dump writes a small dump.
 */
function fakePostgres(dir: string): Record<string, string> {
  const bin = path.join(dir, 'bin');
  mkdirSync(bin);
  const runuser = `#!/bin/bash
shift 3
tool=$1; shift
case $tool in
  psql) while IFS= read -r line; do
      case $line in
        *pg_export_snapshot*) echo 00000003-0000001B-1;;
        *server_version*) echo '"15.4"';;
        *json_object_agg*) echo '{"public.items": 3}';;
        '\\q') exit 0;;
      esac
    done;;
  pg_dump) printf 'PGDMP %s\\n' "$*";;
  pg_dumpall) echo 'CREATE ROLE postgres;';;
esac
`;
  for (const [name, text] of [
    ['runuser', runuser],
    ['psql', '#!/bin/sh\n'],
    ['pg_dump', '#!/bin/sh\n'],
    ['pg_dumpall', '#!/bin/sh\n'],
  ]) {
    writeFileSync(path.join(bin, name!), text!);
    chmodSync(path.join(bin, name!), 0o755);
  }
  return { PATH: `${bin}:${process.env.PATH}` };
}

describe('backup now', () => {
  test('runs the program inline when it is not installed: dump, globals and manifest, and the dump path read back', () => {
    const root = rootSandbox('backup');
    try {
      const backupDir = path.join(root, 'backups');
      // An app name no machine has installed, so the inline program runs.
      const now = backupNowStep({ ...OPTS, app: 'mstest-nowhere', backupDir }, 'pre-migrate-20260101_000000');
      expect(now.script).toContain(
        '/usr/local/sbin/metalship-backup-mstest-nowhere pre-migrate-20260101_000000',
      );
      const r = spawnSync('bash', ['-se'], {
        input: wrapScript(now.script),
        encoding: 'utf8',
        env: { ...process.env, ...fakePostgres(root) },
      });
      expect(r.status).toBe(0);
      const dump = now.parse(r.stdout);
      expect(dump).toMatch(
        new RegExp(`^${backupDir}/shop_\\d{8}T\\d{6}Z_pre-migrate-20260101_000000\\.dump$`),
      );
      const data = readFileSync(dump);
      expect(data.toString()).toMatch(/^PGDMP -Fc --snapshot=00000003-0000001B-1 -d shop\n$/);
      const manifest = JSON.parse(readFileSync(dump.replace(/\.dump$/, '.manifest.json'), 'utf8')) as Record<
        string,
        unknown
      >;
      expect(manifest).toMatchObject({
        database: 'shop',
        label: 'pre-migrate-20260101_000000',
        file: path.basename(dump),
        size: data.length,
        sha256: createHash('sha256').update(data).digest('hex'),
        pg_version: '15.4',
        tables: { 'public.items': 3 },
      });
      expect(readdirSync(backupDir).sort()).toEqual(
        [
          '.backup.lock',
          path.basename(dump),
          path.basename(dump, '.dump') + '.globals.sql',
          path.basename(dump, '.dump') + '.manifest.json',
        ].sort(),
      );
      expect(now.parse('noise\nDUMP /var/backups/x.dump\n')).toBe('/var/backups/x.dump');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('the last restore test, for deploy warnings', () => {
  test('warns when none is recorded, when it is unreadable, or older than the limit; says nothing without backups', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ms-proof-'));
    try {
      const proof = restoreProofStep(dir, 45);
      const run = () =>
        proof.parse(execFileSync('bash', ['-se'], { input: wrapScript(proof.script), encoding: 'utf8' }));
      const record = (text: string) => writeFileSync(path.join(dir, '.last-verified.json'), text);
      const daysAgo = (days: number) => new Date(Date.now() - days * 86400000).toISOString();
      expect(run()).toMatch(/no restore test/);
      record('{oops');
      expect(run()).toMatch(/unreadable/);
      record(JSON.stringify({ verified: daysAgo(30) }));
      expect(run()).toBeNull();
      record(JSON.stringify({ verified: daysAgo(90) }));
      expect(run()).toMatch(/90 days ago/);
      rmSync(dir, { recursive: true });
      expect(run()).toBeNull();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(restoreProofStep("/srv/it's").script).toContain(`record='/srv/it'\\''s/.last-verified.json'`);
  });
});
