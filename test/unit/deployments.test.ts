// GitHub Deployments against a local server speaking the documented REST
// shapes; the deploy and rollback bundles are run against it on real hosts in
// test/e2e/deployments.test.ts.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseInputs } from '../../src/inputs/parse.js';
import { Log } from '../../src/log.js';
import {
  environmentName,
  recorded,
  startDeployment,
  type DeploymentSettings,
} from '../../src/stages/deployments.js';
import { sourceRevision } from '../../src/stages/source.js';
import { BASE } from '../support/bad-inputs.js';
import { fakeGitHub, listedInAnyOrder, type FakeGitHub } from '../support/github-api.js';

const TOKEN = 'ghs_unitTestToken0123456789abcdefABCDEF';
const SHA = 'a'.repeat(40);
let ENV: NodeJS.ProcessEnv;
const settings = (over: Partial<DeploymentSettings> = {}): DeploymentSettings => ({
  app: 'shop',
  'github-deployments': true,
  'github-token': TOKEN,
  environment: '',
  'environment-url': '',
  url: 'https://shop.example.com/',
  ...over,
});
const request = {
  ref: SHA,
  noRef: 'no revision',
  description: 'metalship deploy of shop',
  payload: { app: 'shop' },
};

let api: FakeGitHub;
let lines: string[];
let log: Log;
beforeEach(async () => {
  api = await fakeGitHub();
  ENV = {
    GITHUB_REPOSITORY: 'acme/shop',
    GITHUB_RUN_ID: '77',
    GITHUB_SERVER_URL: 'https://github.com',
    GITHUB_API_URL: api.url,
  };
  lines = [];
  log = new Log((l) => lines.push(l));
});
afterEach(async () => {
  await api.close();
});

test('a deploy: created, in_progress, then success with the environment url; the earlier success becomes inactive', async () => {
  // What an earlier deploy left: one deployment serving, one that failed.
  const before = await startDeployment(settings(), request, log, ENV);
  await before.finish(true, 'r1 serves');
  const failed = await startDeployment(settings(), request, log, ENV);
  await failed.finish(false, 'r2 failed');
  api.calls.length = 0;

  const record = await startDeployment(
    settings({ 'environment-url': 'https://shop.example.com/app' }),
    request,
    log,
    ENV,
  );
  await record.finish(true, 'r3 serves');
  const [first, second, third] = api.deployments;
  expect(listedInAnyOrder(api.sequence())).toEqual(
    listedInAnyOrder([
      'POST /deployments',
      `POST /deployments/${third!.id}/statuses in_progress`,
      `POST /deployments/${third!.id}/statuses success`,
      'GET /deployments',
      // Newest first: the failed one is left alone, the one serving until now is made inactive.
      `GET /deployments/${second!.id}/statuses`,
      `GET /deployments/${first!.id}/statuses`,
      `POST /deployments/${first!.id}/statuses inactive`,
    ]),
  );
  const [create, progress, success] = api.calls;
  expect(create!.body).toMatchObject({
    ref: SHA,
    environment: 'production',
    auto_merge: false,
    required_contexts: [],
    payload: { app: 'shop' },
  });
  expect(progress!.body).toMatchObject({
    state: 'in_progress',
    log_url: 'https://github.com/acme/shop/actions/runs/77',
    environment_url: 'https://shop.example.com/app',
  });
  expect(success!.body).toMatchObject({ state: 'success', auto_inactive: true, description: 'r3 serves' });
  expect(api.calls.every((c) => c.authorization === `token ${TOKEN}`)).toBe(true);
  expect(lines.join('\n')).not.toContain(TOKEN);
});

test('a failed deploy: failure, and the earlier deployment stays active', async () => {
  const record = await startDeployment(settings({ environment: 'staging' }), request, log, ENV);
  await recorded(
    record,
    async () => ({ failure: 'verification failed' }),
    () => 'r1 failed; r0 serves again',
  );
  expect(listedInAnyOrder(api.sequence())).toEqual(
    listedInAnyOrder([
      'POST /deployments',
      'POST /deployments/1001/statuses in_progress',
      'POST /deployments/1001/statuses failure',
    ]),
  );
  expect(api.calls[0]!.body).toMatchObject({ environment: 'staging' });
  expect(api.calls[2]!.body).toMatchObject({
    auto_inactive: false,
    environment_url: 'https://shop.example.com/',
    description: 'r1 failed; r0 serves again',
  });
});

test('a deploy that throws is recorded as failed, and the error goes on', async () => {
  const record = await startDeployment(settings(), request, log, ENV);
  await expect(
    recorded(
      record,
      () => Promise.reject(new Error('no route to host')),
      (o) => (o ? 'done' : 'failed before a release'),
    ),
  ).rejects.toThrow('no route to host');
  expect(api.sequence().pop()).toBe('POST /deployments/1001/statuses failure');
});

test('a token that may not write deployments (403): one notice, nothing more asked, the deploy goes on', async () => {
  api.refuse = 403;
  const record = await startDeployment(settings(), request, log, ENV);
  await record.finish(true, 'r1 serves');
  expect(listedInAnyOrder(api.sequence())).toEqual(listedInAnyOrder(['POST /deployments']));
  expect(lines).toEqual([
    'notice: GitHub deployment not recorded: the token may not write deployments (HTTP 403 creating the deployment); give it deployments: write, or set github-deployments: false',
  ]);
});

test('another failure of the API is a warning, never an error', async () => {
  api.refuse = 500;
  const record = await startDeployment(settings(), request, log, ENV);
  await record.finish(false, 'x');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^warning: GitHub deployment not recorded: creating the deployment failed: /);
});

test.each([
  ['off', settings({ 'github-deployments': false }), true, []],
  [
    'outside GitHub',
    settings(),
    false,
    [
      'notice: GitHub deployment not recorded: not running on GitHub (no GITHUB_REPOSITORY); github-deployments: false turns this off',
    ],
  ],
  [
    'without a token',
    settings({ 'github-token': '' }),
    true,
    ['notice: GitHub deployment not recorded: github-token is empty'],
  ],
])('%s: no call', async (_what, s, onGitHub, said) => {
  const record = await startDeployment(s, request, log, onGitHub ? ENV : { GITHUB_API_URL: api.url });
  await record.finish(true, 'r1 serves');
  expect(api.calls).toEqual([]);
  expect(lines).toEqual(said);
});

test('without a revision: skipped, saying why', async () => {
  await startDeployment(
    settings(),
    { ...request, ref: '', noRef: 'the git revision of r1 is unknown' },
    log,
    ENV,
  );
  expect(api.calls).toEqual([]);
  expect(lines).toEqual(['notice: GitHub deployment not recorded: the git revision of r1 is unknown']);
});

test('the environment: given, else the deployment event that started the workflow, else production', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ms-event-'));
  const event = path.join(dir, 'event.json');
  writeFileSync(event, JSON.stringify({ deployment: { id: 9, environment: 'qa' } }));
  const env = { GITHUB_EVENT_NAME: 'deployment', GITHUB_EVENT_PATH: event };
  expect(environmentName({ environment: 'staging' }, env)).toBe('staging');
  expect(environmentName({ environment: '' }, env)).toBe('qa');
  expect(environmentName({ environment: '' }, { ...env, GITHUB_EVENT_NAME: 'push' })).toBe('production');
  expect(environmentName({ environment: '' }, { ...env, GITHUB_EVENT_PATH: path.join(dir, 'none') })).toBe(
    'production',
  );
  rmSync(dir, { recursive: true });
});

test("the inputs: on by default, the token's unevaluated default (the command line) is no token", () => {
  const s = parseInputs('deploy', (n) => (BASE as Record<string, string>)[n]);
  expect([s['github-deployments'], s['github-token'], s.environment, s['environment-url']]).toEqual([
    true,
    '',
    '',
    '',
  ]);
  const t = parseInputs(
    'rollback',
    (n) => ({ ...BASE, 'github-token': TOKEN, 'github-deployments': 'false' })[n],
  );
  expect([t['github-deployments'], t['github-token']]).toEqual([false, TOKEN]);
  expect(() => parseInputs('deploy', (n) => ({ ...BASE, 'github-token': `${TOKEN} x` })[n])).toThrow(
    "Input 'github-token': has characters other than letters, digits and _.-",
  );
});

describe('the revision recorded with a release', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), 'ms-rev-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  test("GITHUB_SHA on GitHub, else the source's git HEAD, else empty", async () => {
    expect(await sourceRevision(dir, {})).toBe('');
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', dir, '-c', 'user.name=t', '-c', 'user.email=t@example.com', ...args], {
        encoding: 'utf8',
      }).trim();
    git('init', '-q');
    expect(await sourceRevision(dir, {})).toBe(''); // no commit yet
    writeFileSync(path.join(dir, 'main.py'), 'app = None\n');
    git('add', '.');
    git('commit', '-qm', 'first');
    const head = git('rev-parse', 'HEAD');
    expect(await sourceRevision(dir, {})).toBe(head);
    expect(await sourceRevision(path.join(dir), { GITHUB_SHA: SHA })).toBe(SHA);
  });
});

describe('whatever GitHub answers, the run goes on', () => {
  test.each([
    ['a 201 whose body is not JSON', '', 'ok'],
    ['a 201 with an empty body', '', ''],
    ['a 201 that is a JSON list', '', '[1,2]'],
  ])('creating the deployment answers %s: skipped with a warning, never thrown', async (_what, _x, body) => {
    api.odd = (c) => (c.method === 'POST' && c.path.endsWith('/deployments') ? { status: 201, body } : null);
    const record = await startDeployment(settings(), request, log, ENV);
    await record.finish(true, 'r1 serves');
    expect(lines.join('\n')).toMatch(/GitHub deployment not recorded/);
    expect(lines.join('\n')).not.toContain(TOKEN);
  });

  test('a redirect is not followed: the token never reaches the other server, and the run goes on', async () => {
    const elsewhere = await fakeGitHub();
    try {
      api.odd = (c) =>
        c.method === 'POST' && c.path.endsWith('/deployments')
          ? { status: 307, body: '', headers: { location: `${elsewhere.url}/repos/acme/shop/deployments` } }
          : null;
      const record = await startDeployment(settings(), request, log, ENV);
      await record.finish(true, 'r1 serves');
      expect(lines.join('\n')).toMatch(/GitHub deployment not recorded: creating the deployment failed/);
      expect(elsewhere.calls).toEqual([]);
      expect(lines.join('\n')).not.toContain(TOKEN);
    } finally {
      await elsewhere.close();
    }
  });

  test('listing earlier deployments answers an object, and their statuses text: the success stands', async () => {
    const record = await startDeployment(settings(), request, log, ENV);
    api.odd = (c) =>
      c.method === 'GET'
        ? { status: 200, body: c.path.endsWith('/deployments') ? '{"message":"x"}' : 'not json' }
        : null;
    await expect(record.finish(true, 'r1 serves')).resolves.toBeUndefined();
    expect(api.sequence()).toContain('POST /deployments/1001/statuses success');
  });

  test('a slow GitHub: all the calls of a finish share one budget, then the rest is left out', async () => {
    for (let i = 0; i < 6; i++)
      await (await startDeployment(settings(), request, log, ENV)).finish(true, `r${i}`);
    const record = await startDeployment(settings(), request, log, ENV, 1500);
    api.odd = (c) => (c.method === 'GET' ? { status: 200, body: '[]', delayMs: 2000 } : null);
    lines.length = 0;
    await record.finish(true, 'r7 serves');
    expect(lines.join('\n')).toMatch(
      /GitHub deployment not recorded: (GitHub took over 1\.5 s|GitHub did not answer within 1\.\d s)/,
    );
  });

  test("the deployment event's environment is checked as the input is: a name with a newline is not taken", () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'metalship-event-'));
    try {
      const file = path.join(dir, 'event.json');
      writeFileSync(file, JSON.stringify({ deployment: { environment: 'prod\n::error title=pwn::x' } }));
      const env = { GITHUB_EVENT_NAME: 'deployment', GITHUB_EVENT_PATH: file };
      expect(environmentName({ environment: '' }, env)).toBe('production');
      writeFileSync(file, JSON.stringify({ deployment: { environment: 'review/pr-7' } }));
      expect(environmentName({ environment: '' }, env)).toBe('review/pr-7');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
