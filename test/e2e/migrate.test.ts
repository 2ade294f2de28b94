// Migrations end to end with the sample app and real PostgreSQL: once per
// deploy across three hosts, behind a backup and an advisory lock; a failing
// migration changes nothing; a rollback with migrate-down restores the schema.
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  connectionInputs,
  e2eState,
  httpGet,
  onHost,
  outcome,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  setUpAppOnHost,
  type E2EState,
} from '../support/e2e.js';

const APP = 'inventory';
const DB_URL = 'postgresql://inventory:inv-secret-pw@127.0.0.1:5432/inventory';
let state: E2EState;
let source: string;
let hosts: E2EState['hosts'];
let first: E2EState['hosts'][0];

/** An Alembic revision file: its docstring, revisions, and the bodies of upgrade and downgrade. */
function migration(
  doc: string,
  revision: string,
  down: string,
  upgrade: string[],
  downgrade: string[],
): string {
  const body = (lines: string[]) => lines.map((l) => `    ${l}`).join('\n');
  return `"""${doc}"""
from alembic import op
import sqlalchemy as sa

revision = "${revision}"
down_revision = "${down}"
branch_labels = None
depends_on = None


def upgrade():
${body(upgrade)}


def downgrade():
${body(downgrade)}
`;
}

const MIGRATION_0002 = migration(
  'price and orders',
  '0002',
  '0001',
  [
    'op.add_column("items", sa.Column("price", sa.Integer(), nullable=True))',
    'op.create_table("orders", sa.Column("id", sa.Integer(), primary_key=True), sa.Column("item_id", sa.Integer()))',
    'op.execute("INSERT INTO orders (item_id) VALUES (1), (2)")',
  ],
  ['op.drop_table("orders")', 'op.drop_column("items", "price")'],
);

const MIGRATION_0003_FAILS = migration(
  'a migration that fails half way',
  '0003',
  '0002',
  [
    'op.create_table("audit", sa.Column("id", sa.Integer(), primary_key=True))',
    'op.execute("SELECT no_such_function()")',
  ],
  ['op.drop_table("audit")'],
);
import { setTimeout as sleep } from 'node:timers/promises';

const psql = (sql: string) => `runuser -u postgres -- psql -qAtX -d ${APP} -c ${JSON.stringify(sql)}`;

/** The sample app's inputs with migrate left to its default (auto). */
function autoMigrateInputs(app: string, dir: string): Record<string, string> {
  const all = sampleAppInputs(app, dir);
  delete all.migrate;
  return all;
}

/** The deploy's inputs with migrate, migrate-command and revision-command left to their defaults (auto, alembic). */
function inputs(extra: Record<string, string> = {}) {
  const app = autoMigrateInputs(APP, source);
  return {
    ...connectionInputs(state, hosts),
    ...app,
    'server-name': SERVER_NAME,
    ...extra,
  };
}

/** The migrate stage's seconds, from the deploy's summary. */
const migrateSeconds = (summary: string) => /migrate (\d+\.\d+)/.exec(summary)?.[1] ?? 'none';

// The deploy test's app is the default site on the first host: this one has its own name.
const SERVER_NAME = 'inventory.test';

async function version(): Promise<{ release: string; version: string }> {
  return JSON.parse((await httpGet(first.address, '/version', SERVER_NAME)).body) as {
    release: string;
    version: string;
  };
}

beforeAll(async () => {
  state = e2eState();
  hosts = state.hosts.slice(0, 3);
  first = hosts[0]!;
  source = await sampleAppCopy('inv');
  for (const h of hosts)
    expect(await setUpAppOnHost(state, h, APP, { redisDb: 1, dbPassword: 'inv-secret-pw' })).toBe(DB_URL);
});
afterAll(async () => {
  await rm(source, { recursive: true, force: true });
});

const ids: Record<string, string> = {};

test('a deploy to three hosts migrates exactly once, on the first host, by default (auto: the release has alembic.ini), with alembic run by the venv python (no alembic script in a system-site-packages venv)', async () => {
  const r = await runBundle('deploy', inputs());
  expect(outcome(r)).toBe('succeeded');
  expect(r.stdout).toContain('migrate is auto and the release has alembic.ini');
  expect(r.log).not.toContain('Traceback');
  ids.v1 = r.outputs['release-id']!;
  expect(r.outputs['revision-after']).toBe('0001');
  expect((await onHost(state, first, psql('SELECT version_num FROM alembic_version'))).trim()).toBe('0001');
  expect((await onHost(state, first, psql('SELECT count(*) FROM items'))).trim()).toBe('3');
  for (const h of hosts.slice(1)) {
    expect((await onHost(state, h, psql("SELECT to_regclass('alembic_version') IS NULL"))).trim()).toBe('t');
  }
  expect(r.log).not.toContain('inv-secret-pw');
});

let countsBeforeV2 = '';
let backupOfV2 = '';

test('v2 adds a column and a table with data, after a backup', async () => {
  countsBeforeV2 = await onHost(
    state,
    first,
    psql(
      "SELECT 'items=' || (SELECT count(*) FROM items) || ' alembic_version=' || (SELECT count(*) FROM alembic_version)",
    ),
  );
  await writeFile(path.join(source, 'migrations/versions/0002_price_orders.py'), MIGRATION_0002);
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v2"\n');
  const r = await runBundle('deploy', inputs());
  expect(outcome(r)).toBe('succeeded');
  ids.v2 = r.outputs['release-id']!;
  expect([r.outputs['revision-before'], r.outputs['revision-after']]).toEqual(['0001', '0002']);
  expect((await onHost(state, first, psql('SELECT count(*) FROM orders'))).trim()).toBe('2');
  expect(await version()).toEqual({ release: ids.v2, version: 'v2' });
  backupOfV2 = `/var/backups/metalship/${APP}/pre-migrate/${APP}_${ids.v2}_pre-migrate.dump`;
  expect(r.stdout).toContain(`BACKUP ${backupOfV2}`);
});

test('a one-file deploy whose migration files are unchanged skips the migration: no revision command, no backup', async () => {
  // Before: a custom command (its files are not known as a no-op) runs everything, backup included.
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v2a"\n');
  const full = await runBundle('deploy', inputs({ 'migrate-command': 'python -m dbmigrate upgrade head' }));
  expect(outcome(full)).toBe('succeeded');
  expect(full.stdout).toMatch(/BACKUP \//);
  // The default command at the head: one alembic current, no backup, no upgrade.
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v2b"\n');
  const atHead = await runBundle('deploy', inputs());
  expect(outcome(atHead)).toBe('succeeded');
  expect(atHead.stdout).toContain('SKIPPED the schema is at the head (0002)');
  expect(atHead.stdout).not.toMatch(/BACKUP \//);
  // The same migration files as current applied: nothing runs at all.
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v2c"\n');
  const same = await runBundle('deploy', inputs());
  expect(outcome(same)).toBe('succeeded');
  ids.v2 = same.outputs['release-id']!;
  expect(same.stdout).toContain('SKIPPED the migration files are those');
  expect(same.stdout).not.toMatch(/BACKUP \/|took the migration lock/);
  expect([same.outputs['revision-before'], same.outputs['revision-after']]).toEqual(['0002', '0002']);
  expect(await version()).toEqual({ release: ids.v2, version: 'v2c' });
  expect(
    (await onHost(state, first, `cat /opt/${APP}/releases/${ids.v2}/.metalship/schema-revision`)).trim(),
  ).toBe('0002');
  // Measured, not asserted (the machine is shared): the migrate stage of a one-file deploy, backup on.
  console.log(
    `migrate stage of a one-file deploy with a no-op migration, backup on: everything run ${migrateSeconds(full.summary)} s, ` +
      `at the head ${migrateSeconds(atHead.summary)} s, files unchanged ${migrateSeconds(same.summary)} s`,
  );
});

test('the pre-migration backup restores into a scratch database with the source row counts', async () => {
  await onHost(
    state,
    first,
    `test "$(sha256sum ${backupOfV2} | cut -d' ' -f1)" = "$(cut -d' ' -f1 ${backupOfV2}.sha256)"`,
  );
  const counts = await onHost(
    state,
    first,
    `runuser -u postgres -- createdb scratch_restore && runuser -u postgres -- pg_restore --exit-on-error --no-owner -d scratch_restore < ${backupOfV2} && ` +
      `runuser -u postgres -- psql -qAtX -d scratch_restore -c "SELECT 'items=' || (SELECT count(*) FROM items) || ' alembic_version=' || (SELECT count(*) FROM alembic_version)"; ` +
      `runuser -u postgres -- dropdb scratch_restore`,
  );
  expect(counts).toBe(countsBeforeV2);
});

test('a second migration waits for the advisory lock, and gives up naming its holder', async () => {
  // Hold the app's migration lock from another session until the patient run
  // says it waits (then that session is ended): no timing to depend on.
  const holder = onHost(
    state,
    first,
    `PGAPPNAME='metalship-migrate test-holder' psql -qAtX ${DB_URL} -c "SELECT pg_advisory_lock(hashtext('metalship-migrate:${APP}')), pg_sleep(600)" || true`,
  );
  const held = psql(
    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'metalship-migrate test-holder'",
  );
  for (let i = 0; (await onHost(state, first, held)).trim() !== '1'; i++) {
    if (i > 300) throw new Error('the test holder never took the migration lock');
    await sleep(200);
  }
  const migrateInputs = {
    ...connectionInputs(state, hosts),
    app: APP,
    'release-id': ids.v2!,
    command: 'python -m dbmigrate upgrade head',
    'revision-command': 'python -m dbmigrate current',
  };
  const impatient = await runBundle('migrate', { ...migrateInputs, 'lock-timeout': '1' });
  expect(impatient.code).toBe(1);
  expect(impatient.stdout).toMatch(
    /another migration of inventory holds the lock metalship-migrate:inventory .*metalship-migrate test-holder/,
  );
  let released = false;
  const patient = await runBundle(
    'migrate',
    { ...migrateInputs, 'lock-timeout': '60', backup: 'false' },
    {
      onOutput: (out) => {
        if (released || !out.includes('waiting for the migration lock')) return;
        released = true;
        void onHost(
          state,
          first,
          psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'metalship-migrate test-holder'",
          ),
        );
      },
    },
  );
  await holder;
  expect(outcome(patient)).toBe('succeeded');
  expect(patient.stdout).toMatch(
    /waiting for the migration lock metalship-migrate:inventory, held by metalship-migrate test-holder/,
  );
  expect(patient.outputs.changed).toBe('false');
  // The release is still good: a lock that was busy says nothing about it.
  expect((await onHost(state, first, `cat /opt/${APP}/releases/${ids.v2}/.metalship/status`)).trim()).toBe(
    'ready',
  );
});

test('a v3 whose migration fails leaves v2 serving and the schema unchanged', async () => {
  await writeFile(path.join(source, 'migrations/versions/0003_fails.py'), MIGRATION_0003_FAILS);
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v3"\n');
  const r = await runBundle('deploy', inputs());
  await rm(path.join(source, 'migrations/versions/0003_fails.py'));
  expect(r.code).toBe(1);
  ids.v3 = r.outputs['release-id']!;
  expect(r.stdout).toContain(`failed on ${first.address}`);
  expect(r.stdout).toMatch(/no_such_function/);
  expect(r.summary).toMatch(/no_such_function/);
  expect(await version()).toEqual({ release: ids.v2, version: 'v2c' });
  expect(
    (
      await onHost(
        state,
        first,
        psql("SELECT version_num || ' ' || (to_regclass('audit') IS NULL) FROM alembic_version"),
      )
    ).trim(),
  ).toBe('0002 true');
  for (const h of hosts)
    expect((await onHost(state, h, `cat /opt/${APP}/releases/${ids.v3}/.metalship/status`)).trim()).toBe(
      'failed',
    );
});

test('a release that cannot import fails before its migration runs: nothing migrated, no backup taken, v2 serving', async () => {
  const guard = migration(
    'would add a table',
    '0003',
    '0002',
    ['op.create_table("guard", sa.Column("id", sa.Integer(), primary_key=True))'],
    ['op.drop_table("guard")'],
  );
  await writeFile(path.join(source, 'migrations/versions/0003_guard.py'), guard);
  await writeFile(path.join(source, 'broken_app.py'), 'raise ImportError("metalship-e2e: cannot import")\n');
  const backups = `ls /var/backups/metalship/${APP}/pre-migrate | wc -l`;
  const backupsBefore = await onHost(state, first, backups);
  let r;
  try {
    r = await runBundle('deploy', inputs({ 'app-module': 'broken_app:app' }));
  } finally {
    await rm(path.join(source, 'migrations/versions/0003_guard.py'), { force: true });
    await rm(path.join(source, 'broken_app.py'), { force: true });
  }
  expect(r.code).toBe(1);
  expect(r.stdout).toContain('metalship-e2e: cannot import');
  expect(r.stdout).toMatch(/the migration for \S+ failed on/);
  expect(await version()).toEqual({ release: ids.v2, version: 'v2c' });
  expect(
    (
      await onHost(
        state,
        first,
        psql("SELECT version_num || ' ' || (to_regclass('guard') IS NULL) FROM alembic_version"),
      )
    ).trim(),
  ).toBe('0002 true');
  expect(await onHost(state, first, backups)).toBe(backupsBefore);
});

test('rollback to v1 with migrate-down restores v1 schema while v1 serves', async () => {
  const r = await runBundle('rollback', {
    ...connectionInputs(state, hosts),
    ...sampleAppInputs(APP, source),
    'server-name': SERVER_NAME,
    'release-id': ids.v1!,
    'migrate-down': 'true',
  });
  expect(outcome(r)).toBe('succeeded');
  expect(r.summary).toContain('Data written since');
  expect(
    (
      await onHost(
        state,
        first,
        psql("SELECT version_num || ' ' || (to_regclass('orders') IS NULL) FROM alembic_version"),
      )
    ).trim(),
  ).toBe('0001 true');
  expect(
    (
      await onHost(
        state,
        first,
        psql(
          "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'price'",
        ),
      )
    ).trim(),
  ).toBe('0');
  expect(await version()).toEqual({ release: ids.v1, version: 'v1' });
});

test('migrate-down refuses a target whose revision is unknown, and changes nothing', async () => {
  // Releases deployed without migrations record no schema revision.
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v4"\n');
  const v4 = await runBundle('deploy', inputs({ migrate: 'false' }));
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v5"\n');
  const v5 = await runBundle('deploy', inputs({ migrate: 'false' }));
  expect([v4.code, v5.code]).toEqual([0, 0]);
  const r = await runBundle('rollback', {
    ...connectionInputs(state, hosts),
    ...sampleAppInputs(APP, source),
    'server-name': SERVER_NAME,
    'release-id': v4.outputs['release-id']!,
    'migrate-down': 'true',
  });
  expect(r.code).toBe(1);
  expect(r.stdout).toContain(`migrate-down: the schema revision of ${v4.outputs['release-id']} is unknown`);
  expect(await version()).toEqual({ release: v5.outputs['release-id'], version: 'v5' });
  expect((await onHost(state, first, psql('SELECT version_num FROM alembic_version'))).trim()).toBe('0001');
});

test('a migration command that is not there says so, without a traceback, and the release is not switched to', async () => {
  const serving = await version();
  const r = await runBundle(
    'deploy',
    inputs({ 'migrate-command': 'nosuchtool upgrade', 'migrate-backup': 'false' }),
  );
  expect(r.code).toBe(1);
  expect(r.stdout).toContain(
    `nosuchtool: no such command in the release's virtualenv (/opt/${APP}/releases/${r.outputs['release-id']}/.venv/bin) or on PATH`,
  );
  expect(r.stdout).not.toContain('Traceback');
  expect(await version()).toEqual(serving);
});

test('a release without alembic.ini and no migrate input does not migrate', async () => {
  const copy = await sampleAppCopy('inv-noalembic');
  try {
    await rm(path.join(copy, 'alembic.ini'));
    await writeFile(path.join(copy, 'version.py'), 'VERSION = "v6"\n');
    const before = await onHost(state, first, psql('SELECT version_num FROM alembic_version'));
    const app = autoMigrateInputs(APP, copy);
    const r = await runBundle('deploy', {
      ...connectionInputs(state, hosts),
      ...app,
      'server-name': SERVER_NAME,
    });
    expect(outcome(r)).toBe('succeeded');
    expect(r.stdout).toContain(
      'migrate is auto, the release has no alembic.ini and migrate-command is not set: no migration',
    );
    expect(r.stdout).not.toMatch(/Migrate on|migration lock/);
    expect(r.outputs['revision-after'] ?? '').toBe('');
    expect(await onHost(state, first, psql('SELECT version_num FROM alembic_version'))).toBe(before);
    expect(await version()).toEqual({ release: r.outputs['release-id'], version: 'v6' });
  } finally {
    await rm(copy, { recursive: true, force: true });
  }
});

test('a peer-authenticated socket DATABASE_URL (postgresql:///db, the app user owning the database) migrates, lock and backup included', async () => {
  const peer = 'peerapp';
  await onHost(
    state,
    first,
    `runuser -u postgres -- psql -qc "CREATE ROLE ${peer} LOGIN" && runuser -u postgres -- createdb -O ${peer} ${peer} && ` +
      `mkdir -p /opt/${peer} && printf 'REDIS_URL=redis://127.0.0.1:6379/3\\nDATABASE_URL=postgresql:///${peer}\\n' > /opt/${peer}/.env`,
  );
  const app = autoMigrateInputs(peer, source);
  const r = await runBundle('deploy', {
    ...connectionInputs(state, [first]),
    ...app,
    'server-name': 'peer.test',
  });
  expect(outcome(r)).toBe('succeeded');
  expect(r.stdout).toContain(`took the migration lock metalship-migrate:${peer}`);
  expect(r.stdout).toMatch(new RegExp(`BACKUP /var/backups/metalship/${peer}/pre-migrate/`));
  expect(r.outputs['revision-after']).toBe('0002');
  expect(
    (
      await onHost(
        state,
        first,
        `runuser -u postgres -- psql -qAtX -d ${peer} -c 'SELECT version_num FROM alembic_version'`,
      )
    ).trim(),
  ).toBe('0002');
});

test('verify goes through nginx: another site answering 502 for the app name fails the deploy, and the previous release keeps serving', async () => {
  const previous = await version();
  const foreign = '/etc/nginx/sites-enabled/000-foreign';
  // Loaded before the app's own site, it wins the name (nginx warns of the conflict and keeps the first).
  await onHost(
    state,
    first,
    `printf 'server {\\n    listen 80;\\n    server_name ${SERVER_NAME};\\n    location / { return 502; }\\n}\\n' > ${foreign} && nginx -t 2>/dev/null && systemctl reload nginx`,
  );
  try {
    await writeFile(path.join(source, 'version.py'), 'VERSION = "v7"\n');
    const r = await runBundle('deploy', inputs({ migrate: 'false', 'verify-timeout': '5' }));
    expect(r.code).toBe(1);
    expect(r.outputs.healthy).toBe('false');
    expect(r.stdout).toMatch(/through nginx \(Host: inventory\.test\) it answered 502/);
    expect(r.outputs['rolled-back']).toBe('true');
    expect((await onHost(state, first, `readlink /opt/${APP}/current`)).trim()).toBe(
      `/opt/${APP}/releases/${previous.release}`,
    );
  } finally {
    await onHost(state, first, `rm -f ${foreign} && systemctl reload nginx`);
  }
  // A reload returns once nginx is told, before its new workers answer.
  let now = await httpGet(first.address, '/version', SERVER_NAME);
  for (let i = 0; i < 40 && now.status !== 200; i++) {
    await sleep(250);
    now = await httpGet(first.address, '/version', SERVER_NAME);
  }
  expect(JSON.parse(now.body)).toEqual(previous);
});
