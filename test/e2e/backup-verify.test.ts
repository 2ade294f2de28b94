// Backups and restore tests end to end with real PostgreSQL on two test hosts of
// this file's own: the database and its backups on one (installed with the
// backup program and its timer), restores on the other (where the sample app is
// deployed for the smoke test). A good backup verifies; a truncated dump, a dump
// whose manifest disagrees with its data, a backup older than the objective, a
// failing check and a scratch name that is not ours each fail with the reason.
// The scratch database is gone after every run and production never changes.
import { rm } from 'node:fs/promises';
import { wrapScript } from '../../src/remote/session.js';
import { backupInstallScript, backupUnitNames } from '../../src/remote/backup.js';
import {
  E2E_PREFIX,
  outcome,
  ownHostSpecs,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  type BundleRun,
} from '../support/e2e.js';
import {
  bootHosts,
  ensureKey,
  shutdownHosts,
  sshRun,
  type HostKeyPair,
  type TestHost,
} from '../support/hosts.js';

const APP = 'shop';
const DB = 'shop';
const DIR = `/var/backups/metalship/${APP}`;
const HOSTS = ownHostSpecs('b', [61, 62]);
const SCRATCH = 'metalship_verify';

let key: HostKeyPair;
let dbHost: TestHost;
let restoreHost: TestHost;
let source: string;
let production: string;

async function on(host: TestHost, command: string, input?: string): Promise<string> {
  const r = await sshRun(host, key, command, { idleMs: 120000, input });
  if (r.code !== 0)
    throw new Error(`'${command.slice(0, 80)}' failed on ${host.name} (${r.code}): ${r.stderr}`);
  return r.stdout;
}

const psql = (host: TestHost, db: string, sql: string) =>
  on(host, `cd / && runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 -d ${db}`, sql);

/** What production holds: every table's rows, hashed; and the databases of both hosts. */
async function productionFingerprint(): Promise<string> {
  return psql(
    dbHost,
    DB,
    `SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM items t;
     SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM sales.orders t;
     SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database;`,
  );
}

async function scratchCount(host: TestHost): Promise<string> {
  return (
    await psql(host, 'postgres', `SELECT count(*) FROM pg_database WHERE datname = '${SCRATCH}';`)
  ).trim();
}

function connection(): Record<string, string> {
  return {
    'ssh-key': key.privateKey,
    'known-hosts': [dbHost.knownHosts, restoreHost.knownHosts].join('\n'),
  };
}

async function verify(extra: Record<string, string> = {}): Promise<BundleRun> {
  const r = await runBundle('backup-verify', {
    ...connection(),
    app: APP,
    'backup-host': dbHost.address,
    'restore-host': restoreHost.address,
    checks: 'SELECT count(*) = 3 FROM items\nSELECT sum(amount) > 0 FROM sales.orders',
    ...extra,
  });
  // After every run, whatever its outcome: no scratch database on either host, production as before.
  expect(await scratchCount(restoreHost)).toBe('0');
  expect(await scratchCount(dbHost)).toBe('0');
  expect(await productionFingerprint()).toBe(production);
  return r;
}

/** A copy of the daily backup under an old stamp (so it never becomes "the newest"), changed by `edit` on the host. */
async function variant(label: string, edit: string): Promise<string> {
  return (
    await on(
      dbHost,
      `set -e; cd ${DIR}; src=$(ls -1 ${DB}_*_daily.dump | sort | tail -n1); b=${DB}_20200101T000000Z_${label};` +
        ` cp "$src" "$b.dump"; cp "\${src%.dump}.manifest.json" "$b.manifest.json"; f="$b.dump"; m="$b.manifest.json"; ${edit}; echo "${DIR}/$b.dump"`,
    )
  ).trim();
}

beforeAll(async () => {
  key = await ensureKey(`/run/metalship-e2e-backup/${E2E_PREFIX}key`);
  await shutdownHosts(HOSTS.map((h) => h.name));
  [dbHost, restoreHost] = (await bootHosts(HOSTS, key)) as [TestHost, TestHost];
  // Production: the sample app's items (as its migration makes them) and a second schema.
  await psql(dbHost, 'postgres', `CREATE DATABASE ${DB};`);
  await psql(
    dbHost,
    DB,
    `CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
     INSERT INTO items (name) VALUES ('apple'), ('pear'), ('plum');
     CREATE SCHEMA sales;
     CREATE TABLE sales.orders (id bigserial PRIMARY KEY, item int REFERENCES items, amount numeric(10,2), at timestamptz DEFAULT now());
     CREATE INDEX ON sales.orders (at);
     INSERT INTO sales.orders (item, amount) SELECT 1 + g % 3, g / 7.0 FROM generate_series(1, 20000) g;`,
  );
  production = await productionFingerprint();
  // The sample app on the restore host, for the smoke test.
  source = await sampleAppCopy('shop');
  const deployed = await runBundle('deploy', {
    hosts: restoreHost.address,
    'ssh-key': key.privateKey,
    'known-hosts': restoreHost.knownHosts,
    ...sampleAppInputs(APP, source),
    'health-path': '/health/ready',
  });
  if (deployed.code !== 0)
    throw new Error(`deploying the sample app failed:\n${deployed.stdout}${deployed.stderr}`);
});

afterAll(async () => {
  if (source) await rm(source, { recursive: true, force: true });
  if (!process.env.METALSHIP_KEEP_HOSTS) await shutdownHosts(HOSTS.map((h) => h.name));
});

test('the backup program installs idempotently with its timer and writes dump, globals and manifest', async () => {
  const install = wrapScript(
    backupInstallScript({ app: APP, database: DB, backupDir: DIR, retentionDays: 30 }),
  );
  const first = await on(dbHost, 'bash -se', install);
  expect(first).toMatch(/changed \/usr\/local\/sbin\/metalship-backup-shop/);
  expect(first).toMatch(/changed metalship-backup-shop\.timer enabled/);
  expect(await on(dbHost, 'bash -se', install)).toBe('');
  const { service, timer } = backupUnitNames(APP);
  expect((await on(dbHost, `systemctl is-active ${timer}`)).trim()).toBe('active');
  // The daily run, as the timer starts it.
  await on(dbHost, `systemctl start ${service}`);
  const listing = await on(dbHost, `stat -c '%a %U %n' ${DIR} ${DIR}/*`);
  expect(listing).toMatch(new RegExp(`^700 root ${DIR}$`, 'm'));
  const files = listing.split('\n').filter((l) => l.includes(`${DIR}/`));
  expect(files.map((l) => l.replace(/_\d{8}T\d{6}Z_/, '_STAMP_'))).toEqual([
    `600 root ${DIR}/${DB}_STAMP_daily.dump`,
    `600 root ${DIR}/${DB}_STAMP_daily.globals.sql`,
    `600 root ${DIR}/${DB}_STAMP_daily.manifest.json`,
  ]);
  const manifest = JSON.parse(await on(dbHost, `cat ${DIR}/*.manifest.json`)) as Record<string, unknown>;
  expect(manifest).toMatchObject({
    database: DB,
    label: 'daily',
    tables: { 'public.items': 3, 'sales.orders': 20000 },
  });
  expect(manifest.sha256).toBe((await on(dbHost, `sha256sum ${DIR}/*.dump | cut -d' ' -f1`)).trim());
  expect(await on(dbHost, `cat ${DIR}/*.globals.sql`)).toMatch(/CREATE ROLE postgres/);
});

test('a good backup verifies on the other host, with the smoke test, and reports its figures', async () => {
  const r = await verify();
  expect(r.log).not.toContain(key.privateKey.split('\n')[1]!);
  expect(outcome(r)).toBe('succeeded');
  expect(r.outputs.verified).toBe('true');
  expect(r.outputs['backup-file']).toMatch(new RegExp(`^${DIR}/${DB}_\\d{8}T\\d{6}Z_daily\\.dump$`));
  expect(r.outputs.tables).toBe('2');
  expect(r.outputs.rows).toBe('20003');
  expect(Number(r.outputs['backup-age-hours'])).toBeLessThan(1);
  expect(Number(r.outputs['restore-seconds'])).toBeGreaterThan(0);
  expect(r.summary).toContain('Recovery report');
  expect(r.summary).toMatch(/copied .* through the runner/);
  expect(r.summary).toMatch(/\| row counts \| 2 tables, 20003 rows, each as in the manifest \|.*✅/);
  expect(r.summary).toMatch(/\| amcheck \| [1-9]\d* btree indexes/);
  expect(r.summary).toMatch(/\| smoke test \| current release answered GET \/health with 200 .*✅/);
  expect(r.summary).toMatch(/check `SELECT count\(\*\) = 3 FROM items` \| true/);
  expect(r.summary).toContain('No earlier successful verification');
  const record = JSON.parse(await on(dbHost, `cat ${DIR}/.last-verified.json`)) as { backup: string };
  expect(record.backup).toBe(r.outputs['backup-file']);
  if (process.env.METALSHIP_E2E_VERBOSE) process.stdout.write(r.summary);
});

test('a second run on the backup host itself reports how long ago the last proof was', async () => {
  const r = await verify({ 'restore-host': '', smoke: 'false' });
  expect(outcome(r)).toBe('succeeded');
  expect(r.outputs['last-verified-hours']).toMatch(/^\d+\.\d$/);
  expect(r.summary).toContain('Previous successful verification');
  expect(r.summary).toMatch(/\| smoke test \| off/);
});

test('a truncated dump fails on its checksum, and one with a rewritten manifest fails in pg_restore', async () => {
  const truncated = await variant('truncated', 'truncate -s -200 "$f"');
  let r = await verify({ 'backup-file': truncated });
  expect(r.code).toBe(1);
  expect(r.outputs.verified).toBe('false');
  expect(r.stdout).toMatch(/truncated or was changed after the backup/);
  expect(r.summary).toMatch(/\| checksum \| does not match the manifest/);

  // Cut in the middle, in the table data: PostgreSQL 17's custom format ends
  // with a copy of its table of contents, which a restore from a pipe never reads.
  const rewritten = await variant(
    'rewritten',
    `truncate -s $(($(stat -c %s "$f") / 2)) "$f"; python3 -c 'import json,sys,hashlib,os; m=json.load(open(sys.argv[1])); d=open(sys.argv[2],"rb").read(); m["size"]=len(d); m["sha256"]=hashlib.sha256(d).hexdigest(); json.dump(m,open(sys.argv[1],"w"))' "$m" "$f"`,
  );
  r = await verify({ 'backup-file': rewritten });
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/pg_restore failed/);
});

test('a dump whose manifest disagrees with its data fails on the row counts', async () => {
  const lying = await variant('lying', `sed -i 's/"sales.orders" : 20000/"sales.orders" : 20001/' "$m"`);
  const r = await verify({ 'backup-file': lying });
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/sales\.orders: 20000 rows restored, the manifest says 20001/);
  expect(r.summary).toMatch(/\| row counts \| 1 of 2 tables differ/);
});

test('a backup older than the RPO objective fails without being restored', async () => {
  const old = await variant(
    'old',
    `sed -i "s/\\"created\\": \\"[^\\"]*\\"/\\"created\\": \\"$(date -u -d '3 days ago' +%Y-%m-%dT%H:%M:%SZ)\\"/" "$m"`,
  );
  const r = await verify({ 'backup-file': old, 'max-age-hours': '26' });
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/older than the RPO objective of 26 h/);
  expect(Number(r.outputs['backup-age-hours'])).toBeGreaterThan(70);
  expect(r.summary).not.toContain('pg_restore');
});

test('a backup dated in the future fails without being restored', async () => {
  const future = await variant(
    'future',
    `sed -i "s/\\"created\\": \\"[^\\"]*\\"/\\"created\\": \\"2099-12-31T00:00:00Z\\"/" "$m"`,
  );
  const r = await verify({ 'backup-file': future });
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/a backup cannot be newer than now/);
  expect(r.summary).not.toContain('pg_restore');
});

test('a failing check fails the job and names the check', async () => {
  const r = await verify({ checks: 'SELECT count(*) = 3 FROM items\nSELECT count(*) = 0 FROM sales.orders' });
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/check failed: SELECT count\(\*\) = 0 FROM sales\.orders returned false/);
  expect(r.summary).toMatch(/check `SELECT count\(\*\) = 3 FROM items` \| true .*✅/);
});

test('a scratch name taken by a database that is not its own is refused and left alone', async () => {
  await psql(restoreHost, 'postgres', `CREATE DATABASE ${SCRATCH};`);
  await psql(restoreHost, SCRATCH, 'CREATE TABLE precious (x int); INSERT INTO precious VALUES (42);');
  try {
    const r = await runBundle('backup-verify', {
      ...connection(),
      app: APP,
      'backup-host': dbHost.address,
      'restore-host': restoreHost.address,
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /a database named metalship_verify exists and is not a scratch database of metalship/,
    );
    expect((await psql(restoreHost, SCRATCH, 'SELECT x FROM precious;')).trim()).toBe('42');
  } finally {
    await psql(restoreHost, 'postgres', `DROP DATABASE ${SCRATCH};`);
  }
  expect(await productionFingerprint()).toBe(production);
});

test('inputs are checked before any host is contacted', async () => {
  const r = await runBundle('backup-verify', {
    ...connection(),
    app: APP,
    'backup-host': dbHost.address,
    'scratch-database': DB,
    'max-age-hours': 'a day',
  });
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/Input 'max-age-hours': 'a day' is not a whole number/);
  expect(r.summary).toContain('No host was contacted');
});
