// A rollback restores exactly what served: the settings given only to a
// deploy are recorded with its release, so a rollback given none of them
// leaves the unit files byte for byte as they were. A release only built (the
// fleet's <id>-migrate) is no rollback target. An empty worker or scheduler
// command turns that unit off. A first release that fails verification never
// serves.
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

const APP = 'exact';
const SERVER = 'exact.test';
let state: E2EState;
let source: string;
let host: E2EState['hosts'][0];

function inputs(extra: Record<string, string> = {}) {
  return {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs(APP, source),
    'server-name': SERVER,
    'expect-body': '{release}',
    'verify-path': '/version',
    ...extra,
  };
}

/** The app's unit files as they are on the host (ABSENT for one that is not). */
async function unitFiles(app: string): Promise<string> {
  const names = [
    `${app}.target`,
    `${app}-api@.service`,
    `${app}-worker@.service`,
    `${app}-scheduler.service`,
  ];
  return onHost(
    state,
    host,
    names.map((n) => `echo "== ${n}"; cat /etc/systemd/system/${n} 2>/dev/null || echo ABSENT`).join('; '),
  );
}

async function active(unit: string): Promise<string> {
  return (await onHost(state, host, `systemctl is-active ${unit} || true`)).trim();
}

async function serving(app: string, server: string): Promise<{ status: number; body: string }> {
  return httpGet(host.address, `/version?app=${app}`, server);
}

beforeAll(async () => {
  state = e2eState();
  host = state.hosts[0]!;
  source = await sampleAppCopy(APP);
  await setUpAppOnHost(state, host, APP, { redisDb: 5 });
});
afterAll(async () => {
  await rm(source, { recursive: true, force: true });
});

test('a rollback given no settings brings back the unit files, settings and code that served', async () => {
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v1"\n');
  const first = await runBundle(
    'deploy',
    inputs({ 'uvicorn-args': '--limit-concurrency 100', 'worker-command': 'python -u -m worker' }),
  );
  expect(first.stdout).not.toMatch(/::error::/);
  expect(outcome(first)).toBe('succeeded');
  const v1 = first.outputs['release-id']!;
  const unitsOfV1 = await unitFiles(APP);
  expect(unitsOfV1).toContain('--limit-concurrency 100');
  expect(unitsOfV1).toMatch(/ExecStart=.*python -u -m worker/);

  // The fleet's way: a release of its own for the migrations, then the deploy.
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v2"\n');
  const built = await runBundle('release', {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs(APP, source),
    'release-id': `${v1}-next-migrate`,
  });
  expect(outcome(built)).toBe('succeeded');
  const second = await runBundle('deploy', inputs({ 'release-id': `${v1}-next` }));
  expect(outcome(second)).toBe('succeeded');
  expect(second.outputs['previous-release-id']).toBe(v1);
  const unitsOfV2 = await unitFiles(APP);
  expect(unitsOfV2).not.toContain('--limit-concurrency');
  expect(unitsOfV2).not.toContain('python -u -m worker');

  // Given nothing but where and what: no uvicorn-args, no worker-command, no scheduler-command.
  const back = await runBundle('rollback', {
    ...connectionInputs(state, [host]),
    app: APP,
    'expect-body': '{release}',
    'verify-path': '/version',
  });
  expect(back.stdout).not.toMatch(/::error::/);
  expect(outcome(back)).toBe('succeeded');
  expect(back.outputs['release-id']).toBe(v1);
  expect(await unitFiles(APP)).toBe(unitsOfV1);
  expect(await serving(APP, SERVER)).toMatchObject({ status: 200, body: expect.stringContaining(v1) });
  for (const unit of [`${APP}-worker@${v1}.service`, `${APP}-scheduler.service`])
    expect(await active(unit)).toBe('active');
  const ps = await onHost(
    state,
    host,
    `systemctl show -p MainPID --value ${APP}-worker@${v1}.service | xargs -r ps -o args= -p`,
  );
  expect(ps).toMatch(/python -u -m worker/);
});

test('an empty worker-command and scheduler-command none: the deploy succeeds with neither unit', async () => {
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v3"\n');
  const off = await runBundle('deploy', inputs({ 'worker-command': '', 'scheduler-command': 'none' }));
  expect(off.stdout).not.toMatch(/::error::/);
  expect(outcome(off)).toBe('succeeded');
  expect(off.outputs.healthy).toBe('true');
  const units = await unitFiles(APP);
  expect(units).toContain(`== ${APP}-worker@.service\nABSENT`);
  expect(units).toContain(`== ${APP}-scheduler.service\nABSENT`);
  for (const unit of [`'${APP}-worker@*.service'`, `${APP}-scheduler.service`])
    expect(await active(unit)).not.toMatch(/^active$/m);
  expect(await serving(APP, SERVER)).toMatchObject({
    status: 200,
    body: expect.stringContaining(off.outputs['release-id']!),
  });
});

test('a first release that fails verification never serves: nothing does, and the message says so', async () => {
  const app = 'firstfail';
  const server = 'firstfail.test';
  const dir = await sampleAppCopy(app);
  try {
    await setUpAppOnHost(state, host, app, { redisDb: 6 });
    await writeFile(path.join(dir, 'FAIL_HEALTH'), '');
    const before = await serving(app, server);
    const run = await runBundle('deploy', {
      ...connectionInputs(state, [host]),
      ...sampleAppInputs(app, dir),
      'server-name': server,
      'verify-path': '/version',
      'verify-timeout': '3',
    });
    expect(run.code).toBe(1);
    const id = run.outputs['release-id']!;
    expect(run.stdout).toMatch(
      new RegExp(`the first release ${id} failed verification: nothing serves the app now`),
    );
    expect(run.stdout).not.toMatch(/may still serve/);
    expect((await onHost(state, host, `readlink /opt/${app}/current || echo NONE`)).trim()).toBe('NONE');
    for (const unit of [`${app}-api@blue.service`, `${app}-api@green.service`, `'${app}-worker@*.service'`])
      expect(await active(unit)).not.toMatch(/^active$/m);
    // As before the deploy (the site is not loaded: the release failed its checks
    // before the switch): whatever answered then (another app's default site,
    // nginx's own) answers now, and never this release.
    const after = await serving(app, server);
    expect(after.status).toBe(before.status);
    expect(after.body).not.toContain(id);
    expect(await onHost(state, host, `cat /opt/${app}/releases/${id}/.metalship/status`)).toBe('bad\n');

    // Fixed, the next deploy is a first one again, and serves.
    await rm(path.join(dir, 'FAIL_HEALTH'));
    const fixed = await runBundle('deploy', {
      ...connectionInputs(state, [host]),
      ...sampleAppInputs(app, dir),
      'server-name': server,
      'verify-path': '/version',
    });
    expect(outcome(fixed)).toBe('succeeded');
    expect(fixed.outputs['previous-release-id']).toBe('');
    expect((await serving(app, server)).status).toBe(200);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a rollback to the warm standby moves traffic before its checks, after the round trip that takes the lock; a stopped standby is started and checked first', async () => {
  const app = 'warm';
  const server = 'warm.test';
  const dir = await sampleAppCopy(app);
  const ids: string[] = [];
  const base = () => ({
    ...connectionInputs(state, [host]),
    app,
    'server-name': server,
    'expect-body': '{release}',
    'verify-path': '/version',
  });
  const deploy = async (version: string) => {
    await writeFile(path.join(dir, 'version.py'), `VERSION = "${version}"\n`);
    const r = await runBundle('deploy', { ...base(), ...sampleAppInputs(app, dir), 'server-name': server });
    expect(outcome(r)).toBe('succeeded');
    ids.push(r.outputs['release-id']!);
    return r;
  };
  try {
    await setUpAppOnHost(state, host, app, { redisDb: 7 });
    const first = await deploy('w1');
    // Every run prints its timeline, and the summary its stages.
    expect(first.timeline.some((l) => /\] building release /.test(l))).toBe(true);
    expect(first.summary).toMatch(/\*\*Stages:\*\* .*Switch .* \d+\.\d\d s/);
    await deploy('w2');

    // The standby still runs w1: traffic moves at once, the checks follow.
    const warm = await runBundle('rollback', base());
    expect(warm.stdout).not.toMatch(/::error::/);
    expect(outcome(warm)).toBe('succeeded');
    expect(warm.outputs['release-id']).toBe(ids[0]);
    expect(warm.stdout).toContain(`already runs ${ids[0]} (a warm standby): traffic moves to it now`);
    const log = warm.stdout.split('\n');
    const moved = log.findIndex((l) => /\] MARK traffic moved to the (blue|green) slot$/.test(l));
    expect(moved).toBeGreaterThan(0);
    expect(log.slice(0, moved).some((l) => /waiting for .* to answer/.test(l))).toBe(false);
    const steps = warm.timeline;
    const at = (re: RegExp) => steps.findIndex((l) => re.test(l));
    expect(at(/• \[.*\] traffic moved/)).toBeGreaterThan(0);
    // The checks run in the switch's own script, once traffic moved: no step of their own.
    expect(at(/\] switching to \S+, then checking it$/)).toBeGreaterThan(0);
    expect(at(/\] health check$/)).toBe(-1);
    expect(moved).toBeLessThan(log.findIndex((l) => /\] healthy after \d+ check/.test(l)));
    // Before the switch: the connection, and the lock taken with all the rollback needs read under it.
    const before = steps.slice(0, at(/\] switching to /)).filter((l) => /^\+\S+\s+\S+ {4}\[/.test(l));
    expect(before.map((l) => l.replace(/^.*\] /, ''))).toEqual([
      'connecting',
      'taking the deploy lock, then reading the releases, the freeze and the rollback target',
    ]);
    expect(await serving(app, server)).toMatchObject({ status: 200, body: expect.stringContaining(ids[0]!) });

    // A standby that is stopped: started, and ready on its own socket, before traffic moves to it.
    await deploy('w3');
    const active = (await onHost(state, host, `cat /opt/${app}/.metalship/active-slot`)).trim();
    const standby = active === 'blue' ? 'green' : 'blue';
    await onHost(state, host, `systemctl stop ${app}-api@${standby}.service`);
    const cold = await runBundle('rollback', base());
    expect(cold.stdout).not.toMatch(/::error::/);
    expect(outcome(cold)).toBe('succeeded');
    expect(cold.outputs['release-id']).toBe(ids[0]);
    const coldLog = cold.stdout.split('\n');
    const coldMoved = coldLog.findIndex((l) => /\] MARK traffic moved to the (blue|green) slot$/.test(l));
    expect(
      coldLog.slice(0, coldMoved).some((l) => l.includes(`starting ${ids[0]} in the ${standby} slot`)),
    ).toBe(true);
    expect(coldLog.slice(0, coldMoved).some((l) => /\] READY /.test(l))).toBe(true);
    expect(cold.stdout).not.toContain('(a warm standby)');
    expect(await serving(app, server)).toMatchObject({ status: 200, body: expect.stringContaining(ids[0]!) });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
