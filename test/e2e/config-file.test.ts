// One config per environment: a deploy and a rollback whose settings come
// from the repository's .metalship.yml (the app, its runtime settings, the
// environment's hosts and host keys), given only the SSH key and the
// environment; an input given overrides the file; a bad file fails before any
// host is contacted and changes nothing there.
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  e2eState,
  httpGet,
  onHost,
  outcome,
  runBundle,
  runCli,
  sampleAppCopy,
  setUpAppOnHost,
  type E2EState,
} from '../support/e2e.js';

const APP = 'cfgfile';
const SERVER = 'cfgfile.test';
let state: E2EState;
let host: E2EState['hosts'][0];
let workspace: string;

/** The repository's config: production is the test host; staging an address nothing answers on, never contacted. */
function config(extra = ''): string {
  return `# metalship settings of this repository
app: ${APP}
server-name: ${SERVER}
health-path: /health
worker-command: python -u -m worker
scheduler-command: python -m scheduler
# No PyPI on the test hosts: Debian's packages through the venv.
system-site-packages: true
pip-args: --no-index
migrate: false
verify-path: /version
expect-body: '{release}'
environments:
  production:
    hosts:
      - ${host.address}
    known-hosts: |
${host.knownHosts.replace(/^/gm, '      ')}
  staging:
    hosts: 192.0.2.1
    known-hosts: "192.0.2.1 ${host.knownHosts.split('\n')[0]!.split(' ').slice(1).join(' ')}"
${extra}`;
}

/** A step as a workflow would write it: the key from a secret, the environment, nothing else unless told. */
function step(bundle: string, given: Record<string, string> = {}) {
  return runBundle(
    bundle,
    { 'ssh-key': state.key.privateKey, environment: 'production', ...given },
    { cwd: workspace, env: { GITHUB_WORKSPACE: workspace } },
  );
}

async function hostState(): Promise<string> {
  return onHost(
    state,
    host,
    `readlink /opt/${APP}/current; ls /opt/${APP}/releases; cat /opt/${APP}/releases/*/.metalship/status; ` +
      `ls /etc/systemd/system | grep '^${APP}' ; systemctl is-active ${APP}-api@blue ${APP}-api@green || true`,
  );
}

async function runtimeOf(id: string): Promise<Record<string, string>> {
  const text = await onHost(state, host, `cat /opt/${APP}/releases/${id}/.metalship/runtime.json`);
  return (JSON.parse(text) as { settings: Record<string, string> }).settings;
}

beforeAll(async () => {
  state = e2eState();
  host = state.hosts[0]!;
  workspace = await sampleAppCopy(APP);
  await setUpAppOnHost(state, host, APP, { redisDb: 11 });
});
afterAll(async () => {
  await rm(workspace, { recursive: true, force: true });
});

let v1 = '';

test('a deploy given only the key and the environment takes every setting from .metalship.yml', async () => {
  await writeFile(path.join(workspace, '.metalship.yml'), config());
  await writeFile(path.join(workspace, 'version.py'), 'VERSION = "v1"\n');
  const run = await step('deploy');
  expect(run.stdout).not.toMatch(/::error::/);
  expect(outcome(run)).toBe('succeeded');
  expect(run.stdout).toMatch(
    /Config file \.metalship\.yml, environment production: .*\bhosts\b.*\bapp\b.*taken from it/,
  );
  v1 = run.outputs['release-id']!;
  // The file's settings, the production section's host: the app serves as configured.
  expect(await runtimeOf(v1)).toEqual({
    'app-user': APP,
    'app-module': 'main:app',
    'uvicorn-args': '',
    'worker-command': 'python -u -m worker',
    'scheduler-command': 'python -m scheduler',
    'units-ready': 'stable',
    'health-path': '/health',
  });
  expect(await httpGet(host.address, '/version', SERVER)).toMatchObject({
    status: 200,
    body: expect.stringContaining(v1),
  });
  expect(
    await onHost(state, host, `systemctl show -p ExecStart --value ${APP}-worker@${v1}.service`),
  ).toMatch(/python -u -m worker/);
});

test('an input given overrides the file; a rollback given only the key and the environment brings back what served', async () => {
  await writeFile(path.join(workspace, 'version.py'), 'VERSION = "v2"\n');
  const run = await step('deploy', { 'health-path': '/health/ready', 'worker-command': 'python -m worker' });
  expect(outcome(run)).toBe('succeeded');
  const v2 = run.outputs['release-id']!;
  expect(run.outputs['previous-release-id']).toBe(v1);
  expect(await runtimeOf(v2)).toMatchObject({
    'health-path': '/health/ready',
    'worker-command': 'python -m worker',
  });

  // The file says health-path /health and worker python -u -m worker, as v1 was released with: the rollback
  // takes v1's record, and its app, hosts and verification from the file.
  const back = await step('rollback');
  expect(back.stdout).not.toMatch(/::error::/);
  expect(outcome(back)).toBe('succeeded');
  expect(back.outputs['release-id']).toBe(v1);
  expect(back.outputs['rolled-back-from']).toBe(v2);
  expect(await httpGet(host.address, '/version', SERVER)).toMatchObject({
    status: 200,
    body: expect.stringContaining(v1),
  });
  expect(
    await onHost(state, host, `systemctl show -p ExecStart --value ${APP}-worker@${v1}.service`),
  ).toMatch(/python -u -m worker/);
});

test('the command line reads the same file: status in the repository, given the key and the environment', async () => {
  await writeFile(path.join(workspace, '.deploy-key'), state.key.privateKey, { mode: 0o600 });
  const run = await runCli(['status', '--environment', 'production', '--ssh-key', '@.deploy-key'], {
    home: workspace,
    secrets: { 'ssh-key': state.key.privateKey },
  });
  expect(run.stderr).toBe('');
  expect(outcome(run)).toBe('succeeded');
  expect(run.stdout).toContain('frozen=false');
  // The file's app on the production section's host: v1 is current again after the rollback.
  expect(run.stdout).toContain(`### ${host.address}`);
  expect(run.stdout).toContain(`| ${v1} | ready | current (blue) |`);
});

test('a bad config file fails every action before any host is contacted, and changes nothing', async () => {
  const before = await hostState();
  const journalMark = (await onHost(state, host, 'journalctl -n 0 --show-cursor | tail -1')).trim();
  await writeFile(
    path.join(workspace, '.metalship.yml'),
    config(`    verify-timeout: forever\n`).replace('health-path: /health\n', 'health-pth: /health\n'),
  );
  for (const bundle of ['deploy', 'rollback', 'status']) {
    const run = await step(bundle);
    expect([bundle, run.code]).toEqual([bundle, 1]);
    expect(run.stdout).toContain(
      "key 'health-pth': is not an input of any metalship action; did you mean health-path?",
    );
    expect(run.stdout).toMatch(
      /\.metalship\.yml:\d+: key 'environments\.staging\.verify-timeout': 'forever' is not a whole number/,
    );
    expect(run.summary).toContain('No host was contacted.');
  }
  // A secret in the file is refused, naming the key only.
  await writeFile(
    path.join(workspace, '.metalship.yml'),
    config(`    ssh-key-passphrase: not-in-a-file-please\n`),
  );
  const secret = await step('deploy');
  expect(secret.code).toBe(1);
  expect(secret.stdout).toMatch(
    /key 'environments\.staging\.ssh-key-passphrase': is a secret: pass it as an input from a GitHub secret/,
  );
  expect(secret.stdout + secret.summary).not.toContain('not-in-a-file-please');

  // No SSH session reached the host from these runs: sshd logs every one it accepts, so after the
  // journal is synced, this query's own session is the only one since the mark.
  const cursor = journalMark.replace(/^-- cursor: /, '');
  const accepted = await onHost(
    state,
    host,
    `journalctl --sync; journalctl --after-cursor='${cursor}' | grep -c 'Accepted publickey' || true`,
  );
  expect(accepted.trim()).toBe('1');
  expect(await hostState()).toBe(before);
});
