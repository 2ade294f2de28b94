import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { rootSandbox } from '../support/sandbox.js';
import {
  RESTORE_EXIT,
  SCRATCH_MARKER,
  compareCounts,
  dropScratchStep,
  findBackupStep,
  inspectStep,
  prepareScratchStep,
  recordVerifiedStep,
  restoreStep,
  smokeStep,
} from '../../src/remote/restore.js';
import { parseInputs, InputError } from '../../src/inputs/parse.js';
import { recoveryTable, sameHost } from '../../src/stages/backup-verify.js';
import { wrapScript } from '../../src/remote/session.js';
import { FIXTURE_KEY } from '../support/keys.js';
import { UNIX_HTTP_SERVER } from '../support/mstool.js';
import { SCRATCH } from '../support/scripts.js';

/** Runs a script the way the transport does, with `input` after it on stdin. */
function bash(script: string, env: Record<string, string> = {}, input = '') {
  return spawnSync('bash', ['-se'], {
    input: wrapScript(script) + input,
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
}

let dir: string;
beforeEach(() => {
  dir = rootSandbox('restore');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Stand-ins for runuser (as postgres), psql and pg_restore: each SQL text they
 * get (a -c argument or stdin) is logged NUL-terminated to $LOG, and answered
 * the way PostgreSQL would. $COMMENT is the scratch database's comment ('' for
 * none); $RESTORE_FAILS makes pg_restore fail.
 */
function fakePostgres(): Record<string, string> {
  const bin = path.join(dir, 'bin');
  mkdirSync(bin);
  const psql = `#!/bin/bash
# runuser -u USER -- CMD: psql is answered here, anything else runs (as root).
if [ "\${0##*/}" = runuser ]; then if [ "$4" != psql ]; then shift 3; exec "$@"; fi; shift 4; fi
sql=""
while [ $# -gt 0 ]; do if [ "$1" = -c ]; then sql=$2; shift; fi; shift; done
[ -n "$sql" ] || sql=$(cat)
printf '%s\\0' "$sql" >> "$LOG"
case $sql in
  *"SHOW port"*) echo 5432;;
  *"SHOW server_version"*) echo 15.4;;
  *"shobj_description(oid, 'pg_database')"*) if [ -n "$COMMENT" ]; then printf '%s|\\n' "$COMMENT"; fi;;
  *json_object_agg*) echo '{"public.items": 3}';;
  *"FROM pg_proc"*) echo 1;;
  *"bt_index_check(c.oid"*) printf 'items_pkey|\\nitems_name_key|\\n';;
  *"SELECT (SELECT count(*)"*) echo 0;;
  *"DROP ROLE"*|*"CREATE "*|*"DROP DATABASE"*) ;;
  *) echo t;;
esac
`;
  const pgRestore = `#!/bin/bash
case " $* " in
  *" -l "*) echo '215; 1259 16390 TABLE public items shop';;
  *" --exit-on-error "*) if [ -n "$RESTORE_FAILS" ]; then echo 'pg_restore: error: could not execute query' >&2; exit 1; fi;;
esac
`;
  for (const [name, text] of [
    ['runuser', psql],
    ['psql', psql],
    ['pg_restore', pgRestore],
  ] as const) {
    writeFileSync(path.join(bin, name), text);
    chmodSync(path.join(bin, name), 0o755);
  }
  return { PATH: `${bin}:${process.env.PATH}`, LOG: path.join(dir, 'log'), COMMENT: '', RESTORE_FAILS: '' };
}

/**
 * A current release whose virtualenv's python, run as `-m uvicorn MODULE --uds
 * SOCK`, records its environment and what it got, then serves SOCK.
 */
function fakeRelease(): string {
  const appRoot = path.join(dir, 'app');
  const bin = path.join(appRoot, 'current', '.venv', 'bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(path.join(appRoot, 'server.py'), UNIX_HTTP_SERVER);
  writeFileSync(
    path.join(bin, 'python'),
    `#!/bin/bash\nenv > ${dir}/app.env\necho "started $* with $DATABASE_URL"\nexec python3 ${appRoot}/server.py "$5"\n`,
  );
  chmodSync(path.join(bin, 'python'), 0o755);
  return appRoot;
}

/** What the fake PostgreSQL was sent, in order. */
function sent(env: Record<string, string>): string[] {
  try {
    return readFileSync(env.LOG!, 'utf8').split('\0').slice(0, -1);
  } catch {
    return [];
  }
}

function backupFiles(base: string, manifest: Record<string, unknown>): void {
  writeFileSync(path.join(dir, `${base}.dump`), 'abc');
  writeFileSync(path.join(dir, `${base}.manifest.json`), JSON.stringify(manifest) + '\n');
}

const MANIFEST = {
  database: 'shop',
  created: '2026-01-02T03:04:05Z',
  label: 'x',
  size: 3,
  sha256: 'a'.repeat(64),
  pg_version: '15',
  tables: { 'public.items': 3 },
};

describe('finding the backup', () => {
  test('picks the newest stamp of this database, whatever the labels, and ignores look-alike databases', () => {
    for (const base of [
      'shop_20260101T000000Z_daily',
      'shop_20260103T000000Z_aaa-first-alphabetically',
      'shop_20260102T000000Z_zzz',
      'shop_test_20270101T000000Z_daily',
    ])
      backupFiles(base, { ...MANIFEST, file: `${base}.dump` });
    const find = findBackupStep({ backupDir: dir, database: 'shop', file: '' });
    const r = bash(find.script);
    expect(r.stderr).toBe('');
    const found = find.parse(r.stdout);
    if ('error' in found) throw new Error(found.error);
    expect(found.dump).toBe(path.join(dir, 'shop_20260103T000000Z_aaa-first-alphabetically.dump'));
    expect(found.size).toBe(3);
    expect(Math.abs(found.now - Date.now() / 1000)).toBeLessThan(60);
    expect(found.manifest.tables).toEqual({ 'public.items': 3 });
    expect(found.lastVerified).toBeNull();
  });

  test('a named file is read with the record of the last verification', () => {
    backupFiles('shop_20260101T000000Z_daily', MANIFEST);
    const record = {
      verified: '2026-01-01T00:00:00.000Z',
      backup: '/b.dump',
      created: 'c',
      restoreSeconds: 1.5,
      run: '',
    };
    expect(bash(recordVerifiedStep(dir, record).script).status).toBe(0);
    expect(JSON.parse(readFileSync(path.join(dir, '.last-verified.json'), 'utf8'))).toEqual(record);
    const find = findBackupStep({
      backupDir: dir,
      database: 'other',
      file: path.join(dir, 'shop_20260101T000000Z_daily.dump'),
    });
    const found = find.parse(bash(find.script).stdout);
    expect(found).toMatchObject({
      dump: path.join(dir, 'shop_20260101T000000Z_daily.dump'),
      lastVerified: record,
    });
  });

  test('a dump without a manifest, or no backup at all, ends with the no-backup code', () => {
    writeFileSync(path.join(dir, 'shop_20260101T000000Z_daily.dump'), 'abc');
    const run = (backupDir: string, database: string) =>
      bash(findBackupStep({ backupDir, database, file: '' }).script);
    let r = run(dir, 'shop');
    expect(r.status).toBe(RESTORE_EXIT.noBackup);
    expect(r.stderr).toMatch(/has no manifest/);
    r = run(dir, 'other');
    expect(r.status).toBe(RESTORE_EXIT.noBackup);
    expect(r.stderr).toMatch(/no backup of database other in/);
    r = run(path.join(dir, 'nope'), 'shop');
    expect(r.status).toBe(RESTORE_EXIT.noBackup);
    expect(r.stderr).toMatch(/does not exist/);
  });

  test('a manifest without a checksum or with broken JSON is refused', () => {
    const find = findBackupStep({ backupDir: dir, database: 'shop', file: '' });
    backupFiles('shop_20260101T000000Z_daily', { size: 1 });
    expect(find.parse(bash(find.script).stdout)).toEqual({
      error: `the manifest of ${dir}/shop_20260101T000000Z_daily.dump lacks a valid sha256, created, tables`,
    });
    writeFileSync(path.join(dir, 'shop_20260101T000000Z_daily.manifest.json'), '{oops');
    expect(find.parse(bash(find.script).stdout)).toEqual({
      error: `the manifest of ${dir}/shop_20260101T000000Z_daily.dump is not valid JSON`,
    });
  });
});

describe('restore steps', () => {
  test('never name the production database as the scratch one', () => {
    const same = { scratch: 'shop', database: 'shop', role: 'r', password: 'feedface' };
    expect(() => prepareScratchStep(same)).toThrow(/production/);
    expect(() => inspectStep({ ...same, checks: [] })).toThrow(/production/);
    expect(() => dropScratchStep(same)).toThrow(/production/);
    expect(() => restoreStep({ ...same, receive: true, dump: '/x', size: 1, sha256: 'a' })).toThrow(
      /production/,
    );
  });

  test('preparing drops only a leftover carrying our marker, and refuses a database that is not ours', () => {
    const env = fakePostgres();
    const prepare = prepareScratchStep(SCRATCH);
    let r = bash(prepare.script, env);
    expect(r.stderr).toBe('');
    expect(prepare.parse(r.stdout)).toEqual({ droppedLeftover: false });
    expect(sent(env).some((q) => q.includes('DROP DATABASE'))).toBe(false);

    r = bash(prepare.script, { ...env, COMMENT: SCRATCH_MARKER });
    expect(prepare.parse(r.stdout)).toEqual({ droppedLeftover: true });
    expect(sent(env).filter((q) => q.includes('DROP DATABASE'))).toHaveLength(1);

    rmSync(env.LOG!);
    r = bash(prepare.script, { ...env, COMMENT: 'the team database' });
    expect(r.status).toBe(RESTORE_EXIT.notOurs);
    expect(r.stderr).toMatch(
      /a database named metalship_verify exists and is not a scratch database of metalship: refusing/,
    );
    expect(sent(env).some((q) => q.includes('DROP'))).toBe(false);
  });

  test('dropping leaves a database that is not ours, and counts what is left', () => {
    const env = fakePostgres();
    const drop = dropScratchStep(SCRATCH);
    let r = bash(drop.script, { ...env, COMMENT: SCRATCH_MARKER });
    expect(r.stdout).toContain('DROPPED metalship_verify');
    expect(drop.parse(r.stdout)).toEqual({ left: 0 });
    rmSync(env.LOG!);
    r = bash(drop.script, { ...env, COMMENT: 'the team database' });
    expect(r.stderr).toMatch(/not dropping metalship_verify: it is not a scratch database of metalship/);
    expect(sent(env).some((q) => q.includes('DROP DATABASE'))).toBe(false);
    expect(drop.parse('LEFT \n')).toEqual({ left: null });
  });

  test('a received dump of the wrong size or checksum is refused before anything is created', () => {
    const env = fakePostgres();
    const sha = '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824'; // sha256("hello")
    const restore = (size: number) => restoreStep({ ...SCRATCH, receive: true, dump: '', size, sha256: sha });
    let r = bash(restore(5).script, env, 'hel');
    expect(r.status).toBe(RESTORE_EXIT.checksum);
    expect(r.stderr).toMatch(/the dump is 3 bytes but its manifest says 5: it is truncated/);
    // A longer stream is kept only to one byte more than the manifest's size.
    r = bash(restore(5).script, env, 'hello' + 'x'.repeat(100000));
    expect(r.status).toBe(RESTORE_EXIT.checksum);
    expect(r.stdout).toContain('RECEIVED 6\n');
    expect(r.stderr).toMatch(/the dump is 6 bytes but its manifest says 5/);
    r = bash(restore(5).script, env, 'hellx');
    expect(r.status).toBe(RESTORE_EXIT.checksum);
    expect(r.stderr).toMatch(/sha256 .* does not match/);
    expect(sent(env)).toEqual([]);
    r = bash(restore(5).script, env, 'hello');
    expect(r.stderr).toBe('');
    expect(restore(5).parse(r.stdout)).toEqual({
      received: 5,
      seconds: expect.any(Number) as number,
      amcheckUnavailable: null,
    });
    // The role's password reaches psql on stdin, never as an argument.
    expect(sent(env).find((q) => q.startsWith('\\set password '))).toMatch(
      /^\\set password feedface\nCREATE ROLE/,
    );
  });

  test('a dump read in place restores; a failing pg_restore ends with its own code', () => {
    const env = fakePostgres();
    writeFileSync(path.join(dir, 'x.dump'), 'hello');
    const restore = restoreStep({
      ...SCRATCH,
      receive: false,
      dump: path.join(dir, 'x.dump'),
      size: 5,
      sha256: '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824',
    });
    const r = bash(restore.script, env);
    expect(restore.parse(r.stdout)).toMatchObject({ received: null, amcheckUnavailable: null });
    const failed = bash(restore.script, { ...env, RESTORE_FAILS: '1' });
    expect(failed.status).toBe(RESTORE_EXIT.restoreFailed);
    expect(failed.stderr).toMatch(/pg_restore failed: pg_restore: error: could not execute query/);
  });

  test('check queries reach psql byte for byte, hostile ones included, and are read back in order', () => {
    const env = fakePostgres();
    const checks = [
      `SELECT 'it''s' = $$x$$`,
      'SELECT $(touch /tmp/pwned) IS NULL',
      'SELECT `id`',
      'SELECT 1 -- METALSHIP_EOF',
      'METALSHIP_EOF',
      `SELECT "a\\b" FROM t`,
    ];
    const inspect = inspectStep({ ...SCRATCH, checks });
    const r = bash(inspect.script, env);
    expect(r.status).toBe(0);
    expect(sent(env).slice(-checks.length)).toEqual(checks);
    expect(inspect.parse(r.stdout)).toEqual({
      counts: { 'public.items': 3 },
      amcheck: { indexes: 2 },
      checks: checks.map(() => ({ ok: true, answer: 'true' })),
    });
  });

  test('check answers, amcheck failures and unreadable counts read as what they say', () => {
    const inspect = inspectStep({ ...SCRATCH, checks: ['a', 'b', 'c', 'd'] });
    expect(
      inspect.parse(
        'COUNTS oops\nAMCHECK_FAILED index "x" lacks a tuple\nCHECK 0 f\nCHECK 1 error: ERROR: boom \nCHECK 2 t\n',
      ),
    ).toEqual({
      counts: null,
      amcheck: { failed: 'index "x" lacks a tuple' },
      checks: [
        { ok: false, answer: 'false' },
        { ok: false, answer: 'error: ERROR: boom' },
        { ok: true, answer: 'true' },
        { ok: false, answer: 'no result' },
      ],
    });
    expect(inspect.parse('COUNTS {}\n').amcheck).toBeNull();
    expect(inspect.parse('COUNTS 5\n').counts).toBeNull();
  });

  test('the smoke test runs the release with only DATABASE_URL, never prints the password, and skips without a release', () => {
    const smoke = smokeStep({
      ...SCRATCH,
      app: 'shop',
      appRoot: path.join(dir, 'app'),
      appUser: 'shop',
      appModule: 'main:app',
      path: '/health',
      timeout: 30,
    });
    // Every exported variable is dropped; DATABASE_URL goes in the environment, never on a command line.
    expect(smoke.script).toContain('for v in $(compgen -e); do unset "$v"');
    expect(smoke.script).toContain(
      'export PATH="${py%/*}:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/nonexistent LANG=C.UTF-8 DATABASE_URL="$url"',
    );
    expect(smoke.script.split('\n').filter((line) => /\$url|\$PASSWORD/.test(line))).toEqual([
      'as_role() { PGPASSWORD="$PASSWORD" PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER="$ROLE" PGCONNECT_TIMEOUT=10 "$@"; }',
      'url="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$SCRATCH"',
      '  export PATH="${py%/*}:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/nonexistent LANG=C.UTF-8 DATABASE_URL="$url"',
      `  printf '%s\\n' "\${out//"$PASSWORD"/***}" >&2`,
    ]);
    expect(smoke.script).toContain('--uds "$sock"');
    expect(smoke.script).not.toMatch(/echo[^\n]*\$PASSWORD/);
    const r = bash(smoke.script, fakePostgres());
    expect(r.status).toBe(0);
    expect(smoke.parse(r.stdout)).toEqual({
      skipped: `skipped: no current release at ${dir}/app/current on this host`,
    });
    expect(smoke.parse('SMOKE {"ok": true, "status": 200, "seconds": 1.25}\n')).toEqual({
      status: 200,
      seconds: 1.25,
    });
  });
});

describe('the smoke test, run', () => {
  // The timeout bounds a failure only: a busy machine may start the fake app slowly.
  const smoke = (appRoot: string, smokePath: string, timeout = 30) =>
    smokeStep({
      ...SCRATCH,
      app: 'shop',
      appRoot,
      appUser: 'root',
      appModule: 'main:app',
      path: smokePath,
      timeout,
    });

  test('starts the current release with only DATABASE_URL (the scratch role) and reads its answer', () => {
    const appRoot = fakeRelease();
    const step = smoke(appRoot, '/health');
    const r = bash(step.script, fakePostgres());
    expect(r.stderr).toBe('');
    expect(step.parse(r.stdout)).toEqual({ status: 200, seconds: expect.any(Number) as number });
    const env = Object.fromEntries(
      readFileSync(path.join(dir, 'app.env'), 'utf8')
        .trim()
        .split('\n')
        .map((line) => line.split(/=(.*)/s).slice(0, 2)),
    ) as Record<string, string>;
    expect(env.DATABASE_URL).toBe(
      'postgresql://metalship_verify_ab12:feedface@127.0.0.1:5432/metalship_verify',
    );
    expect(env.PATH).toBe(`${appRoot}/current/.venv/bin:/usr/sbin:/usr/bin:/sbin:/bin`);
    expect(
      Object.keys(env).filter(
        (k) => !['PATH', 'HOME', 'LANG', 'DATABASE_URL', 'PWD', 'SHLVL', '_'].includes(k),
      ),
    ).toEqual([]);
  });

  test('a release that does not answer fails with its own code and its output, the password masked', () => {
    const r = bash(smoke(fakeRelease(), '/not-there', 1).script, fakePostgres());
    expect(r.status).toBe(RESTORE_EXIT.smokeFailed);
    expect(r.stderr).toContain('the current release did not answer on the scratch database; its output:');
    expect(r.stderr).toContain('started -m uvicorn main:app --uds');
    expect(r.stderr).toContain('with postgresql://metalship_verify_ab12:***@127.0.0.1:5432/metalship_verify');
    expect(r.stderr).not.toContain('feedface');
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
    parseInputs('backup-verify', (n) => ({ ...base, ...extra })[n]);
  const problems = (extra: Record<string, string>) => {
    try {
      parse(extra);
      return [];
    } catch (e) {
      return (e as InputError).problems;
    }
  };

  test("defaults fit daily backups in provision's directory", () => {
    const settings = parse({});
    expect(settings['backup-dir']).toBe('/var/backups/metalship/shop');
    expect(settings.database).toBe('shop');
    expect(settings['restore-host']).toBeNull();
    expect(settings['max-age-hours']).toBe(26);
    expect(settings.smoke).toBe(true);
    expect(settings.checks).toEqual([]);
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
