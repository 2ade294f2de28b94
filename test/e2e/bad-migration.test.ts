// The README's runbook "a bad migration destroyed data", step by step on a test
// host: a release whose migration drops a column deploys (its health check does
// not read the column); the runbook freezes deploys, stops the app, sets the
// damaged database aside, restores the pre-migration backup as the app's role
// into a new one, checks the revision, rolls the code back; the previous release
// then serves the data from before the migration, and the row written after the
// backup (the RPO) is in the database set aside. The RTO is printed, not asserted.
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

const APP = 'ledger';
const PASSWORD = 'ledger-Db-Secret-5';
const SERVER_NAME = 'ledger.test';
const DAMAGED = `${APP}_damaged_20261201`;
let state: E2EState;
let host: E2EState['hosts'][0];
let source: string;
const ids: Record<string, string> = {};

/** The migration that destroys data: `name` is copied for one row only, then dropped. */
const MIGRATION_0002_DESTROYS = `"""name becomes label (the copy is wrong: one row only)"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("items", sa.Column("label", sa.Text(), nullable=True))
    op.execute("UPDATE items SET label = name WHERE id = 1")
    op.drop_column("items", "name")


def downgrade():
    op.add_column("items", sa.Column("name", sa.Text(), nullable=True))
    op.execute("UPDATE items SET name = label")
    op.drop_column("items", "label")
`;

const psql = (sql: string, db = APP) =>
  `cd / && runuser -u postgres -- psql -qAtX -v ON_ERROR_STOP=1 -d ${db} -c ${JSON.stringify(sql)}`;
const sh = async (command: string) => (await onHost(state, host, command)).trim();
/** The rows of items as the app reads them: how many, and a digest of the names in order. */
const FINGERPRINT = "SELECT count(*) || ' ' || md5(string_agg(name, ',' ORDER BY id)) FROM items";

function deployInputs(): Record<string, string> {
  const app = sampleAppInputs(APP, source);
  delete app.migrate; // auto: the release has alembic.ini
  return { ...connectionInputs(state, [host]), ...app, 'server-name': SERVER_NAME };
}

const items = async () => httpGet(host.address, '/items', SERVER_NAME);
const version = async () =>
  JSON.parse((await httpGet(host.address, '/version', SERVER_NAME)).body) as {
    release: string;
    version: string;
  };

beforeAll(async () => {
  state = e2eState();
  host = state.hosts[0]!;
  source = await sampleAppCopy('ledger');
  await setUpAppOnHost(state, host, APP, { redisDb: 12, dbPassword: PASSWORD });
});
afterAll(async () => {
  await rm(source, { recursive: true, force: true });
});

let before = '';

test('v1 serves its data; v2, whose migration drops a column, deploys all the same and its data is gone', async () => {
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v1"\n');
  const v1 = await runBundle('deploy', deployInputs());
  expect(outcome(v1)).toBe('succeeded');
  ids.v1 = v1.outputs['release-id']!;
  await sh(psql("INSERT INTO items (name) SELECT 'row ' || g FROM generate_series(1, 5000) g"));
  before = await sh(psql(FINGERPRINT));
  expect(before).toMatch(/^5003 [0-9a-f]{32}$/);
  expect(JSON.parse((await items()).body)).toMatchObject({ release: ids.v1 });

  await writeFile(path.join(source, 'migrations/versions/0002_label.py'), MIGRATION_0002_DESTROYS);
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v2"\n');
  const v2 = await runBundle('deploy', deployInputs());
  expect(outcome(v2)).toBe('succeeded');
  ids.v2 = v2.outputs['release-id']!;
  expect(v2.stdout).toContain(
    `BACKUP /var/backups/metalship/${APP}/pre-migrate/${APP}_${ids.v2}_pre-migrate.dump`,
  );
  expect(await version()).toEqual({ release: ids.v2, version: 'v2' });
  expect((await items()).status).toBe(500);
  expect(await sh(psql('SELECT count(*) FILTER (WHERE label IS NULL) FROM items'))).toBe('5002');
  // Written after the backup: the RPO of this runbook.
  await sh(psql("INSERT INTO items (label) VALUES ('written after the backup')"));
});

test("the runbook: freeze, stop, set the damaged database aside, restore the pre-migration backup as the app's role, check, roll back", async () => {
  const dump = `${APP}_${ids.v2}_pre-migrate.dump`;
  const started = Date.now();
  // 1. Freeze deploys: a re-run of the bad deploy would migrate again.
  const lock = await runBundle('lock', {
    ...connectionInputs(state, [host]),
    app: APP,
    reason: `bad migration in ${ids.v2}: restoring`,
  });
  expect(outcome(lock)).toBe('succeeded');
  // 2. The backup and the revision to come back to.
  await sh(`cd /var/backups/metalship/${APP}/pre-migrate && sha256sum -c ${dump}.sha256`);
  const revision = await sh(`cat /opt/${APP}/releases/${ids.v1}/.metalship/schema-revision`);
  expect(revision).toBe('0001');
  // 3. Nothing writes: the app's services stop.
  const stopped = Date.now();
  await sh(
    `systemctl stop ${APP}.target '${APP}-api@*.service' '${APP}-worker@*.service' ${APP}-scheduler.service`,
  );
  expect(
    await sh(
      `systemctl is-active ${APP}-api@blue.service ${APP}-api@green.service ${APP}-worker@${ids.v1}.service ${APP}-scheduler.service || true`,
    ),
  ).toBe('inactive\ninactive\ninactive\ninactive');
  expect(await sh(`systemctl list-units --state=active --plain --no-legend '${APP}-worker@*.service'`)).toBe(
    '',
  );
  // 4. The damaged database set aside, an empty one as provision makes it (postgres runs only these statements).
  await sh(
    `cd / && runuser -u postgres -- psql -qAtX -v ON_ERROR_STOP=1 -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${APP}' AND pid <> pg_backend_pid()" -c "ALTER DATABASE ${APP} RENAME TO ${DAMAGED}" -c "CREATE DATABASE ${APP} OWNER ${APP}"`,
  );
  // 5. The restore, logged in as the app's role (its password in root's ~/.pgpass), never as postgres.
  const restoreStarted = Date.now();
  await sh(`umask 077 && echo '127.0.0.1:*:${APP}:${APP}:${PASSWORD}' > /root/.pgpass`);
  const restored = await sh(
    `cd /var/backups/metalship/${APP}/pre-migrate && pg_restore --exit-on-error --single-transaction --no-owner --no-privileges -h 127.0.0.1 -U ${APP} -d ${APP} < ${dump} 2>&1`,
  );
  expect(restored).toBe('');
  const restoreSeconds = (Date.now() - restoreStarted) / 1000;
  // 6. Check: the revision is the previous release's, the data is there.
  expect(await sh(psql('SELECT version_num FROM alembic_version'))).toBe(revision);
  expect(await sh(psql(FINGERPRINT))).toBe(before);
  expect(await sh(psql("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'items'"))).toBe(APP);
  // 7. The code rolled back: the services start again and the rollback verifies them.
  const rollbackStarted = Date.now();
  const rollback = await runBundle('rollback', {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs(APP, source),
    'server-name': SERVER_NAME,
    'release-id': ids.v1!,
  });
  expect(rollback.stdout).not.toMatch(/::error::/);
  expect(outcome(rollback)).toBe('succeeded');
  const serving = Date.now();
  expect(await version()).toEqual({ release: ids.v1, version: 'v1' });
  const answer = await items();
  expect(answer.status).toBe(200);
  const body = JSON.parse(answer.body) as { release: string; items: string[] };
  expect(body.items).toHaveLength(5003);
  expect(body.items.slice(0, 4)).toEqual(['apple', 'banana', 'cherry', 'row 1']);
  expect(await sh(`cat /opt/${APP}/releases/${ids.v2}/.metalship/status`)).toBe('bad');
  // 8. The RPO, plainly: the row written after the backup is not in production, only in the database set aside.
  expect(await sh(psql("SELECT count(*) FROM items WHERE name LIKE 'written%'"))).toBe('0');
  expect(await sh(psql('SELECT label FROM items WHERE id > 5003', DAMAGED))).toBe('written after the backup');
  process.stdout.write(
    `bad-migration runbook: 5003 rows; from freeze to serving ${((serving - started) / 1000).toFixed(1)} s, ` +
      `downtime (stop to serving) ${((serving - stopped) / 1000).toFixed(1)} s, restore ${restoreSeconds.toFixed(1)} s, ` +
      `rollback run ${((serving - rollbackStarted) / 1000).toFixed(1)} s\n`,
  );
  // 9. Later: the damaged database dropped once salvaged, deploys unfrozen.
  await sh(psql(`DROP DATABASE ${DAMAGED}`, 'postgres'));
  const unlock = await runBundle('unlock', { ...connectionInputs(state, [host]), app: APP });
  expect(outcome(unlock)).toBe('succeeded');
});
