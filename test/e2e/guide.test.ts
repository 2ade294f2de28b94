// The README's adoption guide, followed as a new user would, against a test
// host: its `sh guide` blocks run in order under bash, in the guide's own
// directory or, for `npx metalship` (the package's command line under the
// runner's Node), in a checkout of the sample app; its `sh guide-console`
// block runs on the host (standing in for the provider's console), and its
// `sh guide-github` block is checked against what the example workflows read.
// Changed for the test: the host's name (the test host's address), the app's
// name (apart from other files' apps), the admin login the guide assumes (the
// harness's key, in the user's ssh config), and, through INPUT_* variables,
// what the test host needs (no package archive: provision's system item off;
// Debian's packages for the venv).
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  REPO,
  httpGet,
  RUNNER_NODE,
  e2eState,
  onHost,
  recordShown,
  registerSecret,
  sampleAppCopy,
  setUpAppOnHost,
  type E2EState,
} from '../support/e2e.js';
import type { TestHost } from '../support/hosts.js';
import { readWorkflow } from '../support/workflow.js';

const APP = 'guide';
const SERVER = 'guide.test';
/**
 * What a test host needs (no package archive; Debian's packages for the venv;
 * a server name of its own, as other files' apps share the host), as INPUT_* variables.
 */
const TEST_HOST_INPUTS = `INPUT_SYSTEM=false 'INPUT_SYSTEM-SITE-PACKAGES=true' 'INPUT_PIP-ARGS=--no-index' 'INPUT_SERVER-NAME=${SERVER}'`;
let state: E2EState;
let host: TestHost;
let home: string;
let checkout: string;
let authorizedBefore: string;

interface Block {
  kind: string;
  text: string;
}

/** The README's fenced blocks marked for this test (```sh guide, guide-console, guide-github), in order. */
function guideBlocks(): Block[] {
  const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
  return [...readme.matchAll(/^```sh (guide(?:-[a-z]+)?)\n([\s\S]*?)^```$/gm)].map((m) => ({
    kind: m[1]!,
    text: m[2]!.replaceAll('web1.example.com', host.address).replace(/\bshop\b/g, APP),
  }));
}

/** A file in the guide's own directory (~/metalship-<app>, outside the checkout). */
const guideFile = (name = '') => path.join(home, `metalship-${APP}`, name);

/** Runs a block under bash: in the checkout when it says `npx metalship`, else in the guide's own directory. */
function bash(script: string): { code: number; out: string } {
  const own = guideFile();
  const r = spawnSync('bash', ['-e', '-o', 'pipefail', '-c', script], {
    cwd: script.includes('npx metalship') ? checkout : existsSync(own) ? own : home,
    encoding: 'utf8',
    timeout: 900000,
    env: {
      PATH: `${home}/bin:${process.env.PATH}`,
      HOME: home,
    },
  });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

beforeAll(async () => {
  state = e2eState();
  host = state.hosts[2]!;
  authorizedBefore = await onHost(state, host, 'cat /root/.ssh/authorized_keys');
  home = await mkdtemp(path.join(tmpdir(), 'metalship-guide-home-'));
  checkout = await sampleAppCopy('guide');
  // The admin login the guide assumes (the provider's initial key), and `npx metalship`.
  await mkdir(`${home}/.ssh`, { mode: 0o700 });
  await mkdir(`${home}/bin`);
  await writeFile(`${home}/.ssh/admin_key`, state.key.privateKey, { mode: 0o600 });
  await writeFile(`${home}/.ssh/admin_known_hosts`, host.knownHosts + '\n');
  await writeFile(
    `${home}/.ssh/config`,
    `Host ${host.address}\n  IdentityFile ${home}/.ssh/admin_key\n  IdentitiesOnly yes\n  UserKnownHostsFile ${home}/.ssh/admin_known_hosts\n  StrictHostKeyChecking yes\n`,
  );
  // ssh reads the config of the passwd entry's home, not $HOME's.
  await writeFile(`${home}/bin/ssh`, `#!/bin/sh\nexec /usr/bin/ssh -F ${home}/.ssh/config "$@"\n`);
  await chmod(`${home}/bin/ssh`, 0o755);
  await writeFile(
    `${home}/bin/npx`,
    // bash passes no variable whose name has a hyphen: env sets the test host's INPUT_* ones.
    `#!/bin/sh\n[ "$1" = metalship ] || exit 127\nshift\nexec env ${TEST_HOST_INPUTS} ${RUNNER_NODE} ${REPO}/dist/cli/index.js "$@"\n`,
  );
  await chmod(`${home}/bin/npx`, 0o755);
});

afterAll(async () => {
  if (authorizedBefore)
    await onHost(
      state,
      host,
      `printf '%s' '${authorizedBefore.replaceAll("'", "'\\''")}' > /root/.ssh/authorized_keys`,
    );
  await rm(home, { recursive: true, force: true });
  await rm(checkout, { recursive: true, force: true });
});

test('the guide, from a new deploy key to the first deploy, as a new user follows it', async () => {
  const blocks = guideBlocks();
  expect(blocks.map((b) => b.kind)).toEqual([
    'guide',
    'guide',
    'guide',
    'guide-console',
    'guide',
    'guide-github',
    'guide',
  ]);
  const outputs: string[] = [];
  for (const block of blocks) {
    if (block.kind === 'guide-github') continue;
    if (block.kind === 'guide-console') {
      outputs.push(await onHost(state, host, block.text));
      continue;
    }
    if (block.text.includes('npx metalship')) {
      // What provision (without --check) makes for the app: its database with the guide's password.
      const password = (await readFile(guideFile('db_password'), 'utf8')).trim();
      registerSecret('the guide database password', password);
      registerSecret(
        'the guide Redis password',
        (await readFile(guideFile('redis_password'), 'utf8')).trim(),
      );
      registerSecret('the guide deploy key', await readFile(guideFile('deploy_key'), 'utf8'));
      await setUpAppOnHost(state, host, APP, { redisDb: 11, dbPassword: password });
    }
    const r = bash(block.text);
    recordShown('a shell block of the README guide', r.out);
    expect([block.text, r.code, r.code ? r.out : '']).toEqual([block.text, 0, '']);
    outputs.push(r.out);
  }
  const [, , scan, shown, , deploy] = outputs as [string, string, string, string, string, string];

  // The key is authorised, restricted, and the fingerprints agree.
  const pub = (await readFile(guideFile('deploy_key.pub'), 'utf8')).trim();
  expect(await onHost(state, host, 'cat /root/.ssh/authorized_keys')).toContain(`restrict ${pub}`);
  const fingerprint = (text: string) => /SHA256:[A-Za-z0-9+/]{43}/.exec(text)?.[0];
  expect(fingerprint(scan)).toBeDefined();
  expect(fingerprint(scan)).toBe(fingerprint(shown));

  // provision --check reported and changed nothing; the deploy serves.
  expect(deploy).toMatch(/changed=\d+/);
  const release = /^release-id=(\S+)$/m.exec(deploy)?.[1];
  expect(release).toBeDefined();
  const ready = await httpGet(host.address, '/health/ready', SERVER);
  expect((JSON.parse(ready.body) as { release: string }).release).toBe(release);
  expect(
    await onHost(
      state,
      host,
      `cd / && runuser -u postgres -- psql -tAc 'SELECT version_num FROM alembic_version' ${APP}`,
    ),
  ).toMatch(/^0001/);
});

test("the guide's gh commands set exactly the secrets and variables the example workflows read", () => {
  const github = guideBlocks().find((b) => b.kind === 'guide-github')!.text;
  const set = (what: string) =>
    [...github.matchAll(new RegExp(`^gh ${what} set (\\w+) --env production`, 'gm'))].map((m) => m[1]).sort();
  const read = (what: string) =>
    [
      ...new Set(
        ['provision.yml', 'deploy.yml', 'rollback.yml'].flatMap((f) =>
          [...JSON.stringify(readWorkflow(f)).matchAll(new RegExp(`${what}\\.(\\w+)`, 'g'))].map((m) => m[1]),
        ),
      ),
    ].sort();
  expect(set('secret')).toEqual(read('secrets'));
  expect(set('variable')).toEqual(read('vars'));
});
