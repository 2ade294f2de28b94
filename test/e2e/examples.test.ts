// The copy-ready workflows of examples/workflows, run on the shared test hosts
// with their own `with:` values (test/support/workflow.ts) in a checkout whose
// .metalship.yml is examples/metalship.yml: provision.yml (its default, check
// mode), deploy.yml, deploy-steps.yml, rollback.yml while a deploy holds the
// hosts, deploy-fleet.yml failing in a group and re-run as "Re-run failed
// jobs" does, and restore-test.yml. What the test changes: in the config
// file, the production section's hosts, host keys, server name and backup and
// restore hosts (the test hosts'), its domains (none: HTTP only) and the app's
// name (apart from other files' apps on the shared hosts); the values of the
// secrets and variables; and what a test host needs for the sample app (its
// source, Debian's packages for the venv).
import { readFileSync } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { wrapScript } from '../../src/remote/session.js';
import { backupInstallScript, backupUnitNames } from '../../src/remote/backup.js';
import {
  REPO,
  e2eState,
  httpGet,
  onHost,
  outcome,
  registerSecret,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  setUpAppOnHost,
  type E2EState,
} from '../support/e2e.js';
import { sshRun, type TestHost } from '../support/hosts.js';
import { ran, readWorkflow, runJob, type StepRun, type WorkflowContext } from '../support/workflow.js';

const APP = 'exshop';
const DB_PASSWORD = 'exshop-Db-pw-7';
let state: E2EState;
let source: string;
let h1: TestHost;
let h2: TestHost;
let h3: TestHost;
let ctx: WorkflowContext;

const EXAMPLE_CONFIG = readFileSync(path.join(REPO, 'examples/metalship.yml'), 'utf8');

/** examples/metalship.yml with the test hosts in its production section (comments and all else kept). */
function testConfig(): string {
  const doc = parseDocument(EXAMPLE_CONFIG);
  const prod = ['environments', 'production'];
  doc.set('app', APP);
  doc.setIn([...prod, 'hosts'], h1.address);
  doc.setIn([...prod, 'known-hosts'], state.hosts.map((h) => h.knownHosts).join('\n'));
  doc.setIn([...prod, 'server-name'], SERVER);
  doc.setIn([...prod, 'backup-host'], h1.address);
  doc.setIn([...prod, 'restore-host'], h3.address);
  // The test hosts reach no ACME server.
  doc.deleteIn([...prod, 'domains']);
  doc.deleteIn([...prod, 'acme-email']);
  return doc.toString();
}

const connection = (hosts: TestHost[]) => ({
  hosts: hosts.map((h) => h.address).join('\n'),
  'ssh-key': state.key.privateKey,
  'known-hosts': hosts.map((h) => h.knownHosts).join('\n'),
});

/** Other files' apps share the hosts: this one has a server name of its own, not nginx's default server. */
const SERVER = 'exshop.test';

async function serving(host: TestHost): Promise<string> {
  const r = await httpGet(host.address, '/health/ready', SERVER);
  return (JSON.parse(r.body) as { release: string }).release;
}

function ok(steps: StepRun[]): Record<string, StepRun> {
  for (const s of steps.filter((x) => x.run))
    expect([s.name, s.outcome, s.run!.code ? s.run!.stdout.slice(-3000) : '']).toEqual([
      s.name,
      'success',
      '',
    ]);
  return ran(steps);
}

beforeAll(async () => {
  state = e2eState();
  [h1, h2, h3] = state.hosts as [TestHost, TestHost, TestHost];
  source = await sampleAppCopy('examples');
  registerSecret('the example database password', DB_PASSWORD);
  const url = await setUpAppOnHost(state, h1, APP, { redisDb: 10, dbPassword: DB_PASSWORD });
  for (const h of [h2, h3]) await setUpAppOnHost(state, h, APP, { redisDb: 10 });
  await writeFile(path.join(source, '.metalship.yml'), testConfig());
  const sample = sampleAppInputs(APP, source);
  ctx = {
    source,
    secrets: {
      DEPLOY_SSH_KEY: state.key.privateKey,
      RESTORE_TEST_SSH_KEY: state.key.privateKey,
      RESTORE_TEST_HEARTBEAT_URL: '',
      APP_ENV: `REDIS_URL=redis://127.0.0.1:6379/10\nDATABASE_URL=${url}\n`,
      DB_PASSWORD,
      REDIS_PASSWORD: 'exshop-Redis-pw-8',
    },
    vars: {
      APP_URL: `http://${h1.address}/`,
      DEPLOY_MIGRATE_HOST: h1.address,
      DEPLOY_HOSTS_CANARY: h1.address,
      DEPLOY_HOSTS_A: h2.address,
      DEPLOY_HOSTS_B: h3.address,
    },
    // Only what the sample app needs on a test host: everything else comes from the config file.
    adapt: (bundle, given) =>
      bundle === 'release' || bundle === 'deploy'
        ? {
            ...given,
            source,
            'system-site-packages': sample['system-site-packages']!,
            'pip-args': sample['pip-args']!,
          }
        : given,
  };
});

afterAll(async () => {
  await rm(source, { recursive: true, force: true });
});

const ids: Record<string, string> = {};

test("the workflows leave examples/metalship.yml's settings to it: each step gives the environment, secrets and its own values", async () => {
  const config = parseDocument(EXAMPLE_CONFIG).toJS() as Record<string, unknown> & {
    environments: Record<string, Record<string, unknown>>;
  };
  const inFile = new Set([...Object.keys(config), ...Object.keys(config.environments.production!)]);
  const repeated: string[] = [];
  for (const file of await readdir(path.join(REPO, 'examples/workflows')))
    for (const job of Object.values(readWorkflow(file).jobs))
      for (const step of job.steps.filter((x) => x.uses?.startsWith('metalship/'))) {
        expect([file, step.name, step.with?.environment]).toEqual([file, step.name, 'production']);
        for (const key of Object.keys(step.with ?? {}))
          if (inFile.has(key)) repeated.push(`${file}: ${step.name ?? step.uses}: ${key}`);
      }
  // Only the fleet's groups differ from the file: their own hosts, migrated once before them.
  expect(repeated.filter((r) => !/^deploy-fleet\.yml: .*: (hosts|migrate)$/.test(r))).toEqual([]);
});

test('provision.yml: check mode by default, reports the drift and changes nothing', async () => {
  const before = await onHost(state, h1, 'md5sum /etc/ssh/sshd_config; ufw status 2>&1 | head -1; ls /opt');
  // The test hosts reach no package archive: the system item (package index, updates) is left out.
  const steps = await runJob('provision.yml', 'provision', {
    ...ctx,
    adapt: (bundle, given) => ({ ...ctx.adapt(bundle, given), system: 'false' }),
  });
  const p = ran(steps).Provision!;
  expect(p.run!.stdout).not.toMatch(/::error::/);
  expect(p.outcome).toBe('success');
  expect(Number(p.outputs.changed)).toBeGreaterThan(0);
  expect(await onHost(state, h1, 'md5sum /etc/ssh/sshd_config; ufw status 2>&1 | head -1; ls /opt')).toBe(
    before,
  );
});

test('deploy.yml, then deploy-steps.yml: migrated once, each release serving', async () => {
  const deploy = ok(await runJob('deploy.yml', 'deploy', ctx)).Deploy!;
  ids.first = deploy.outputs['release-id']!;
  // Given the key and the environment only: the rest is the file's.
  const taken = /Config file \.metalship\.yml, environment production: (.*) taken from it/.exec(
    deploy.run!.stdout,
  )?.[1];
  expect(taken?.split(', ')).toEqual(
    expect.arrayContaining([
      'hosts',
      'known-hosts',
      'app',
      'server-name',
      'worker-command',
      'health-path',
      'expect-body',
      'migrate',
      'keep-releases',
    ]),
  );
  // migrate: auto, and the sample app has alembic.ini: its migration ran.
  expect(
    await onHost(
      state,
      h1,
      `cd / && runuser -u postgres -- psql -tAc 'SELECT version_num FROM alembic_version' ${APP}`,
    ),
  ).toMatch(/^0001/);
  expect(await serving(h1)).toBe(ids.first);

  const steps = ok(await runJob('deploy-steps.yml', 'deploy', ctx));
  ids.second = steps['Release (upload, virtualenv, import check)']!.outputs['release-id']!;
  expect(
    Object.values(steps)
      .filter((s) => s.run)
      .map((s) => s.name),
  ).toEqual([
    'Release (upload, virtualenv, import check)',
    'Migrate (once, after a backup, under an advisory lock)',
    'Switch (blue/green, zero downtime)',
    'Verify',
  ]);
  expect(await serving(h1)).toBe(ids.second);
  // No worker or scheduler unless the workflow names one.
  expect(
    await onHost(state, h1, `systemctl list-units --all --plain --no-legend '${APP}-*' | awk '{print $1}'`),
  ).not.toMatch(/worker|scheduler/);
});

test('rollback.yml while a deploy holds the host: waits for it, then rolls back; deploys stay frozen', async () => {
  let holding!: () => void;
  const held = new Promise<void>((resolve) => (holding = resolve));
  // A deploy (deploy.yml) that is on the host when the rollback is dispatched.
  const deploying = runBundle(
    'deploy',
    ctx.adapt('deploy', { environment: 'production', 'ssh-key': state.key.privateKey }),
    {
      cwd: source,
      env: { GITHUB_WORKSPACE: source },
      onOutput: (out) => /Release \S+ on 1 host/.test(out) && holding(),
    },
  );
  await held;
  const steps = ok(await runJob('rollback.yml', 'rollback', ctx));
  const third = await deploying;
  expect(outcome(third)).toBe('succeeded');
  ids.third = third.outputs['release-id']!;
  const rollback = steps['Roll back']!;
  // It waited for the deploy's lock, and undid that deploy, not the one before.
  expect(rollback.run!.stdout).toMatch(/waiting|holds the lock|held by/i);
  expect(rollback.outputs['rolled-back-from']).toBe(ids.third);
  expect(rollback.outputs['release-id']).toBe(ids.second);
  expect(await serving(h1)).toBe(ids.second);

  // The next push's deploy is refused by the freeze, naming the reason.
  const refused = ran(await runJob('deploy.yml', 'deploy', ctx)).Deploy!;
  expect(refused.outcome).toBe('failure');
  expect(refused.run!.stdout).toMatch(/rolled back \(rollback by e2e-tester/);
  expect(await serving(h1)).toBe(ids.second);
  const unlock = await runBundle('unlock', { ...connection([h1]), app: APP });
  expect(unlock.outputs['was-frozen']).toBe('true');
});

test('deploy-fleet.yml: a group fails, the groups that switched are undone; the re-run deploys all under a new id', async () => {
  // A fault in group A, fixed before the re-run: its .env breaks the app's Python.
  await onHost(
    state,
    h2,
    `cp /opt/${APP}/.env /root/${APP}.env && echo PYTHONHOME=/nonexistent >> /opt/${APP}/.env`,
  );
  let first: Record<string, StepRun>;
  try {
    const steps = await runJob('deploy-fleet.yml', 'deploy', { ...ctx, runId: '4242', runAttempt: 1 });
    first = ran(steps);
  } finally {
    await onHost(state, h2, `cp /root/${APP}.env /opt/${APP}/.env`);
  }
  const attempt1 = first['Deploy the canary group']!.outputs['release-id']!;
  expect(attempt1).toMatch(/^\d{8}_\d{6}-1$/);
  expect(first['Deploy the canary group']!.outcome).toBe('success');
  expect(first['Deploy group A']!.outcome).toBe('failure');
  expect(first['Deploy group B']!.outcome).toBe('skipped');
  const undo = first['Undo the canary group']!;
  expect([undo.outcome, undo.run!.code ? undo.run!.stdout.slice(-3000) : '']).toEqual(['success', '']);
  expect(undo.outputs['release-id']).toBe(ids.second);
  expect(first['Undo group A']!.outcome).toBe('skipped');
  expect(await serving(h1)).toBe(ids.second);

  // "Re-run failed jobs": the same run, attempt 2.
  const again = ok(await runJob('deploy-fleet.yml', 'deploy', { ...ctx, runId: '4242', runAttempt: 2 }));
  const attempt2 = again['Deploy the canary group']!.outputs['release-id']!;
  expect(attempt2).toMatch(/^\d{8}_\d{6}-2$/);
  for (const h of [h1, h2, h3]) expect(await serving(h)).toBe(attempt2);
  expect([again['Undo the canary group']!.outcome, again['Undo group A']!.outcome]).toEqual([
    'skipped',
    'skipped',
  ]);
});

test('restore-test.yml: the newest backup restores on the restore test host and passes its checks', async () => {
  // What provision's postgresql item installs: the backup program and its daily run.
  await sshRun(h1, state.key, 'bash -se', {
    input: wrapScript(
      backupInstallScript({
        app: APP,
        database: APP,
        backupDir: `/var/backups/metalship/${APP}`,
        retentionDays: 30,
      }),
    ),
    idleMs: 120000,
  });
  await onHost(state, h1, `systemctl start ${backupUnitNames(APP).service}`);
  const steps = ok(
    await runJob('restore-test.yml', 'restore-test', {
      ...ctx,
      // The restore host's smoke test runs the app it serves (the fleet's) against the restored copy.
    }),
  );
  const verify = steps['Restore the newest backup on the test server and check it']!;
  expect(verify.outputs.verified).toBe('true');
  expect(Number(verify.outputs.tables)).toBeGreaterThan(0);
});
