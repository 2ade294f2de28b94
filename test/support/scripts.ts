// Every builder's script with hostile values where inputs reach it: for the
// bash -n test (test/unit/scripts.test.ts) and shellcheck (scripts/lint-scripts.ts).
import { layout } from '../../src/remote/layout.js';
import { lockScript } from '../../src/remote/lock.js';
import { migrateScript, orAlembic, type MigrateScriptSettings } from '../../src/remote/migrate.js';
import { buildStep, ensureAppTree, markStep, prepareStep } from '../../src/remote/release.js';
import { switchScript, unserveStep, uvicornFlagsScript } from '../../src/remote/switch.js';
import { rollbackPlanStep } from '../../src/remote/rollback.js';
import { runtimeDefaults, runtimeRecord } from '../../src/inputs/runtime.js';
import { unitFiles } from '../../src/remote/units.js';
import { freezeCheckStep, freezeStep, unfreezeStep } from '../../src/remote/freeze.js';
import { statusStep } from '../../src/remote/status.js';
import { cleanupStep, listStep, verifyStep, type VerifySettings } from '../../src/remote/verify.js';

export const shopLayout = layout('shop', '/opt/shop');
export const HOSTILE = `it's $(touch /tmp/pwned) \`id\` ; rm -rf / "x"\nnext`;

export const units = unitFiles(
  {
    layout: shopLayout,
    user: 'shop',
    appModule: 'main:app',
    uvicornArgs: ['--workers', '2'],
    workerCommand: ['python', '-m', 'worker'],
    schedulerCommand: ['taskiq', 'scheduler', 'x:y'],
    unitsReady: 'stable',
  },
  { worker: true, scheduler: false },
);

export const MIGRATE: MigrateScriptSettings = {
  layout: shopLayout,
  releaseId: '20250101_000000',
  user: 'shop',
  command: ['alembic', 'upgrade', 'head'],
  revisionCommand: ['alembic', 'current'],
  recordIn: '20250101_000000',
  fingerprint: null,
  backup: { label: 'pre-migrate', keep: 10 },
  lockTimeout: 30,
  actor: HOSTILE,
};

/** The checks of a deploy's verify, with a hostile body to expect. */
const VERIFY: VerifySettings = {
  layout: shopLayout,
  path: '/health',
  timeout: 5,
  interval: 1,
  stableSeconds: 5,
  expectStatus: 200,
  expectBody: HOSTILE,
  units: ['shop-scheduler.service'],
  worker: true,
  restarted: true,
};

/** What every switch variant below shares. */
const SWITCH = {
  layout: shopLayout,
  releaseId: '20250101_000000',
  units,
  healthPath: '/health/ready',
  readyTimeout: 30,
  serverName: '_',
  worker: true,
};

export const scripts: Record<string, string> = {
  lock: lockScript(shopLayout, { action: 'deploy', actor: HOSTILE, runUrl: HOSTILE, startedAt: 'now' }, 30),
  lockWithFirst: lockScript(
    shopLayout,
    { action: 'rollback', actor: HOSTILE, runUrl: HOSTILE, startedAt: 'now' },
    30,
    '',
    rollbackPlanStep(shopLayout, '', 16384).script,
  ),
  prepare: prepareStep(
    {
      layout: shopLayout,
      releaseId: '20250101_000000',
      user: 'shop',
      sharedPaths: ['logs', 'uploads', '.env'],
      stopStandby: true,
    },
    { files: [], links: [] },
  ).script,
  build: buildStep({
    layout: shopLayout,
    releaseId: '20250101_000000',
    user: 'shop',
    hasUpload: true,
    python: 'python3',
    venvKey: 'py-0123',
    requirements: 'requirements.txt',
    pipArgs: ['--no-index'],
    systemSitePackages: true,
    env: '',
    sharedPaths: ['logs', '.env'],
    importCheck: 'main:app',
    metadata: { actor: HOSTILE },
    runtimeRecord: runtimeRecord(runtimeDefaults('shop')),
  }).script,
  'build with its own env': buildStep({
    layout: shopLayout,
    releaseId: '20250101_000000',
    user: 'shop',
    hasUpload: false,
    python: 'python3',
    venvKey: 'py-0123',
    requirements: '',
    pipArgs: [],
    systemSitePackages: false,
    env: `SECRET_KEY="${HOSTILE}"\nMETALSHIP_EOF\n`,
    sharedPaths: ['logs'],
    importCheck: null,
    metadata: { actor: HOSTILE },
    runtimeRecord: runtimeRecord(runtimeDefaults('shop')),
  }).script,
  mark: markStep(shopLayout, '20250101_000000', 'failed', HOSTILE).script,
  tree: ensureAppTree(shopLayout, 'shop', ['logs']),
  switch: switchScript({
    ...SWITCH,
    scheduler: false,
    record: runtimeRecord(runtimeDefaults('shop')),
  }),
  'switch-checks-follow': switchScript({
    ...SWITCH,
    scheduler: true,
    record: runtimeRecord(runtimeDefaults('shop')),
    checksFollow: true,
  }),
  'switch-then-check': switchScript({
    ...SWITCH,
    scheduler: true,
    record: runtimeRecord(runtimeDefaults('shop')),
    checksFollow: true,
    notify: true,
    checks: VERIFY,
  }),
  'switch-then-check-rolling': switchScript({
    ...SWITCH,
    scheduler: true,
    record: runtimeRecord(runtimeDefaults('shop')),
    checksFollow: true,
    notify: true,
    checks: VERIFY,
    followersAfterApi: true,
  }),
  'switch-then-check-worker-only': switchScript({
    ...SWITCH,
    scheduler: false,
    api: false,
    record: runtimeRecord(runtimeDefaults('shop')),
    checksFollow: true,
    checks: { ...VERIFY, api: false, units: [] },
  }),
  'rollback-plan': rollbackPlanStep(shopLayout, '', 20000).script,
  'rollback-plan-named': rollbackPlanStep(shopLayout, HOSTILE, 20000).script,
  unserve: unserveStep(shopLayout).script,
  flags: uvicornFlagsScript(shopLayout.release('x'), 'shop', `${shopLayout.venvs}/py-x`),
  verify: verifyStep(VERIFY).script,
  list: listStep(shopLayout).script,
  cleanup: cleanupStep(shopLayout, { releases: ['a', 'b'], venvs: ['py-1'] }).script,
  migrate: migrateScript(MIGRATE),
  'migrate-alembic-default': migrateScript({
    ...MIGRATE,
    command: orAlembic([], 'upgrade', 'head'),
    revisionCommand: orAlembic([], 'current'),
    fingerprint: 'ab'.repeat(32),
  }),
  freeze: freezeStep(shopLayout, { reason: HOSTILE, actor: HOSTILE, at: 'now', runUrl: HOSTILE }).script,
  unfreeze: unfreezeStep(shopLayout).script,
  'freeze-check': freezeCheckStep(shopLayout).script,
  status: statusStep(shopLayout, 10).script,
};

/** The restore test's scratch database and role (the password a fresh one's shape: hex). */
export const SCRATCH = {
  scratch: 'metalship_verify',
  database: 'shop',
  role: 'metalship_verify_ab12',
  password: 'feedface',
};
