import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { rootSandbox } from '../support/sandbox.js';
import {
  SCRATCH_MARKER,
  compareCounts,
  dropScratchScript,
  findBackupScript,
  inspectScript,
  parseFound,
  prepareScratchScript,
  recordVerifiedScript,
  restoreScript,
  smokeScript,
} from '../../src/remote/restore.js';
import { parseInputs, InputError } from '../../src/inputs/parse.js';
import { recoveryTable, sameHost } from '../../src/actions/backup-verify.js';
import { wrapScript } from '../../src/remote/session.js';
import { FIXTURE_KEY } from '../support/keys.js';

function bash(script: string, env: Record<string, string> = {}) {
  return spawnSync('bash', ['-se'], {
    input: wrapScript(script),
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
}

function parses(text: string): void {
  const r = spawnSync('bash', ['-n'], { input: text, encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
}

let dir: string;
beforeEach(() => {
  dir = rootSandbox('restore');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const SCRATCH = {
  scratch: 'metalship_verify',
  database: 'shop',
  role: 'metalship_verify_ab12',
  password: 'feedface',
};

describe('finding the backup', () => {
  test('picks the newest stamp of this database, whatever the labels, and ignores look-alike databases', () => {
    const manifest = (file: string) =>
      JSON.stringify({
        database: 'shop',
        created: '2026-01-02T03:04:05Z',
        label: 'x',
        file,
        size: 3,
        sha256: 'a'.repeat(64),
        pg_version: '15',
        tables: { 'public.items': 3 },
      });
    for (const base of [
      'shop_20260101T000000Z_daily',
      'shop_20260103T000000Z_aaa-first-alphabetically',
      'shop_20260102T000000Z_zzz',
      'shop_test_20270101T000000Z_daily',
    ]) {
      writeFileSync(path.join(dir, `${base}.dump`), 'abc');
      writeFileSync(path.join(dir, `${base}.manifest.json`), manifest(`${base}.dump`) + '\n');
    }
    writeFileSync(path.join(dir, 'shop_20990101T000000Z_partial.dump'), 'no manifest, older listing');
    rmSync(path.join(dir, 'shop_20990101T000000Z_partial.dump'));
    const r = bash(findBackupScript({ backupDir: dir, database: 'shop', file: '' }));
    expect(r.stderr).toBe('');
    const found = parseFound(r.stdout);
    if ('error' in found) throw new Error(found.error);
    expect(found.dump).toBe(path.join(dir, 'shop_20260103T000000Z_aaa-first-alphabetically.dump'));
    expect(found.size).toBe(3);
    expect(found.manifest.tables).toEqual({ 'public.items': 3 });
    expect(found.lastVerified).toBeNull();
  });

  test('a dump without a manifest, or no backup at all, is reported plainly', () => {
    writeFileSync(path.join(dir, 'shop_20260101T000000Z_daily.dump'), 'abc');
    let r = bash(findBackupScript({ backupDir: dir, database: 'shop', file: '' }));
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/has no manifest/);
    r = bash(findBackupScript({ backupDir: dir, database: 'other', file: '' }));
    expect(r.stderr).toMatch(/no backup of database other in/);
    r = bash(findBackupScript({ backupDir: path.join(dir, 'nope'), database: 'shop', file: '' }));
    expect(r.stderr).toMatch(/does not exist/);
  });

  test('a manifest without a checksum or with broken JSON is refused', () => {
    expect(parseFound('DUMP /x.dump\nMANIFEST {"size": 1}\n')).toEqual({
      error: 'the manifest of /x.dump lacks a valid sha256, created, tables',
    });
    expect(parseFound('DUMP /x.dump\nMANIFEST {oops\n')).toEqual({
      error: 'the manifest of /x.dump is not valid JSON',
    });
  });

  test('the record of the last verification is written atomically and read back', () => {
    const record = {
      verified: '2026-01-01T00:00:00.000Z',
      backup: '/b.dump',
      created: 'c',
      restoreSeconds: 1.5,
      run: '',
    };
    expect(bash(recordVerifiedScript(dir, record)).status).toBe(0);
    expect(JSON.parse(readFileSync(path.join(dir, '.last-verified.json'), 'utf8'))).toEqual(record);
  });
});

describe('restore scripts', () => {
  test('never name the production database as the scratch one', () => {
    const same = { scratch: 'shop', database: 'shop', role: 'r', password: 'feedface' };
    expect(() => prepareScratchScript(same)).toThrow(/production/);
    expect(() => inspectScript({ ...same, checks: [] })).toThrow(/production/);
    expect(() => dropScratchScript({ ...same, role: 'r' })).toThrow(/production/);
    expect(() => restoreScript({ ...same, receive: true, dump: '/x', size: 1, sha256: 'a' })).toThrow(
      /production/,
    );
  });

  test('parse with bash, restore with --exit-on-error, and only drop a database carrying our marker', () => {
    const prep = prepareScratchScript(SCRATCH);
    const restore = restoreScript({ ...SCRATCH, receive: true, dump: '', size: 10, sha256: 'f'.repeat(64) });
    const drop = dropScratchScript({ ...SCRATCH, role: 'metalship_verify_ab12' });
    for (const s of [prep, restore, drop]) parses(s);
    expect(restore).toContain('pg_restore --exit-on-error --no-owner --no-privileges');
    // everything sent is read before anything can fail
    expect(restore.indexOf('cat > "$work/backup.dump"')).toBeLessThan(restore.indexOf('exit 4'));
    expect(prep).toContain('is not a scratch database of metalship: refusing');
    expect(drop).toContain('if [ "$existing" = "$marker|" ]; then');
    expect(drop).toContain(SCRATCH_MARKER);
  });

  test('a received dump of the wrong size or checksum is refused before anything is created', () => {
    const fake = path.join(dir, 'bin');
    spawnSync('mkdir', [fake]);
    writeFileSync(path.join(fake, 'runuser'), '#!/bin/bash\necho "runuser $*" >> "$LOG"\n');
    chmodSync(path.join(fake, 'runuser'), 0o755);
    const log = path.join(dir, 'log');
    const env = { PATH: `${fake}:${process.env.PATH}`, LOG: log };
    const sha = '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824'; // sha256("hello")
    const run = (size: number, sum: string, data: string) =>
      spawnSync('bash', ['-se'], {
        input: wrapScript(restoreScript({ ...SCRATCH, receive: true, dump: '', size, sha256: sum })) + data,
        encoding: 'utf8',
        env: { ...process.env, ...env },
      });
    let r = run(5, sha, 'hel');
    expect(r.status).toBe(4);
    expect(r.stderr).toMatch(/the dump is 3 bytes but its manifest says 5: it is truncated/);
    r = run(5, sha, 'hellx');
    expect(r.status).toBe(4);
    expect(r.stderr).toMatch(/sha256 .* does not match/);
    expect(() => readFileSync(log)).toThrow();
    r = run(5, sha, 'hello');
    expect(r.stdout).toMatch(/RECEIVED 5\nCHECKSUM ok/);
    expect(readFileSync(log, 'utf8')).toMatch(/CREATE|psql/);
  });

  test('check queries reach psql byte for byte, hostile ones included', () => {
    const fake = path.join(dir, 'bin');
    spawnSync('mkdir', [fake]);
    // A stand-in for runuser: records each -c argument, NUL-terminated, and answers "t".
    // psql as the scratch role, and runuser for the superuser's (SHOW port): both log what -c gets.
    for (const tool of ['runuser', 'psql']) {
      writeFileSync(
        path.join(fake, tool),
        '#!/bin/bash\nwhile [ $# -gt 0 ]; do if [ "$1" = -c ]; then printf "%s\\0" "$2" >> "$LOG"; shift; fi; shift; done\necho t\n',
      );
      chmodSync(path.join(fake, tool), 0o755);
    }
    const log = path.join(dir, 'log');
    const checks = [
      `SELECT 'it''s' = $$x$$`,
      'SELECT $(touch /tmp/pwned) IS NULL',
      'SELECT `id`',
      'SELECT 1 -- METALSHIP_EOF',
      'METALSHIP_EOF',
      `SELECT "a\\b" FROM t`,
    ];
    const r = bash(inspectScript({ ...SCRATCH, checks }), { PATH: `${fake}:${process.env.PATH}`, LOG: log });
    expect(r.status).toBe(0);
    const sent = readFileSync(log, 'utf8').split('\0').slice(0, -1);
    expect(sent.slice(-checks.length)).toEqual(checks);
    expect(r.stdout.split('\n').filter((l) => l.startsWith('CHECK '))).toEqual(
      checks.map((_, i) => `CHECK ${i} t`),
    );
  });

  test('the smoke test runs the release with only DATABASE_URL and never prints the password', () => {
    const s = smokeScript({
      ...SCRATCH,
      app: 'shop',
      appRoot: '/opt/shop',
      appUser: 'shop',
      appModule: 'main:app',
      path: '/health',
      timeout: 30,
      password: 'feedface',
      role: 'metalship_verify_ab12',
    });
    parses(s);
    // Every exported variable is dropped; DATABASE_URL goes in the environment, never on a command line.
    expect(s).toContain('for v in $(compgen -e); do unset "$v"');
    expect(s).toContain(
      'export PATH="$(dirname "$py"):/usr/sbin:/usr/bin:/sbin:/bin" HOME=/nonexistent LANG=C.UTF-8 DATABASE_URL="$url"',
    );
    expect(s.split('\n').filter((line) => /\$url|\$password/.test(line))).toEqual([
      'as_role() { PGPASSWORD="$password" PGHOST=127.0.0.1 PGPORT="$port" PGUSER="$role" PGCONNECT_TIMEOUT=10 "$@"; }',
      'url="postgresql://$role:$password@127.0.0.1:$port/$scratch"',
      '  export PATH="$(dirname "$py"):/usr/sbin:/usr/bin:/sbin:/bin" HOME=/nonexistent LANG=C.UTF-8 DATABASE_URL="$url"',
      `  printf '%s\\n' "\${out//"$password"/***}" >&2`,
    ]);
    expect(s).toContain('--uds "$sock"');
    expect(s).not.toMatch(/echo[^\n]*\$password/);
    expect(s).toContain('SMOKE skipped: no current release');
  });
});

describe('comparisons and report', () => {
  test('row counts must match table by table, with no table more or less', () => {
    expect(compareCounts({ 'public.a': 3, 'x.b': 0 }, { 'public.a': 3, 'x.b': 0 })).toEqual({
      tables: 2,
      rows: 3,
      mismatches: [],
    });
    expect(compareCounts({ 'public.a': 3, 'x.b': 1 }, { 'public.a': 2, 'y.c': 5 }).mismatches).toEqual([
      'public.a: 2 rows restored, the manifest says 3',
      'x.b: in the manifest (1 rows) but not restored',
      'y.c: restored but not in the manifest',
    ]);
  });

  test('the report escapes table cells', () => {
    expect(recoveryTable([{ what: 'check `a | b`', measured: 'x\ny', status: 'failed' }])).toContain(
      '| check `a \\| b` | x y |  | ❌ |',
    );
  });

  test('the same host written the same way is one host', () => {
    const h = { label: 'a', host: 'db1', port: 22, roles: [] };
    expect(sameHost(h, { ...h, label: 'b' })).toBe(true);
    expect(sameHost(h, { ...h, port: 2222 })).toBe(false);
  });
});

describe('backup-verify inputs', () => {
  const KEY = FIXTURE_KEY;
  const KH = 'db1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9fXz9fXz9fXz9fXz9fXz9fXz9fXz9fXz9fXz9fXz9f';
  const base: Record<string, string> = {
    app: 'shop',
    'backup-host': 'db1',
    'ssh-key': KEY,
    'known-hosts': KH,
  };
  const parse = (extra: Record<string, string>) =>
    parseInputs('backup-verify', (n) => ({ ...base, ...extra })[n] ?? '');
  const problems = (extra: Record<string, string>) => {
    try {
      parse(extra);
      return [];
    } catch (e) {
      return (e as InputError).problems;
    }
  };

  test("defaults fit daily backups in provision's directory", () => {
    const s = parse({});
    expect(s['backup-dir']).toBe('/var/backups/metalship/shop');
    expect(s.database).toBe('shop');
    expect(s['restore-host']).toBeNull();
    expect(s['max-age-hours']).toBe(26);
    expect(s.smoke).toBe(true);
    expect(s.checks).toEqual([]);
  });

  test('bad values are named before any host is contacted', () => {
    expect(problems({ 'backup-host': '' })).toEqual([
      expect.stringMatching(/^Input 'backup-host' is required/),
    ]);
    expect(problems({ 'scratch-database': 'shop' })).toEqual([
      expect.stringMatching(/^Input 'scratch-database' is 'shop', the production database/),
    ]);
    expect(problems({ 'restore-host': 'test1' })).toEqual([
      expect.stringMatching(/^Input 'known-hosts' has no key for host 'test1'/),
    ]);
    expect(problems({ checks: 'SELECT true\n\\! rm -rf /' })[0]).toMatch(
      /^Input 'checks': .* is a psql meta-command/,
    );
    expect(problems({ 'backup-file': '/srv/x.sql' })[0]).toMatch(/^Input 'backup-file'/);
    expect(problems({ database: 'shop; drop' })[0]).toMatch(/^Input 'database'/);
    expect(problems({ 'max-restore-seconds': '0' })[0]).toMatch(
      /^Input 'max-restore-seconds': 0 is out of range/,
    );
  });
});
