// GitHub Deployments, end to end: the deploy and rollback bundles run against a
// test host and a local server speaking GitHub's documented REST shapes
// (GITHUB_API_URL points them at it). A deploy is recorded in_progress then
// success (the one before made inactive) or failure; a rollback records the
// release it restores at that release's own revision; a token that may not
// write deployments changes nothing but a notice.
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  connectionInputs,
  e2eState,
  onHost,
  outcome,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  setUpAppOnHost,
  type E2EState,
} from '../support/e2e.js';
import { fakeGitHub, listedInAnyOrder, type FakeGitHub } from '../support/github-api.js';

const APP = 'ghdep';
const SERVER = 'ghdep.test';
const TOKEN = `ghs_e2e${Date.now().toString(36)}DeploymentsToken0123456789`;
const SITE = 'https://ghdep.example.test/';
let state: E2EState;
let source: string;
let host: E2EState['hosts'][0];
let api: FakeGitHub;

function inputs(extra: Record<string, string> = {}) {
  return {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs(APP, source),
    'server-name': SERVER,
    'expect-body': '{release}',
    'verify-path': '/version',
    'github-token': TOKEN,
    'environment-url': SITE,
    ...extra,
  };
}

/** Runs a bundle as on GitHub, against the local API, with GITHUB_SHA as given ('' for none). */
function run(bundle: string, sha: string, extra: Record<string, string> = {}) {
  return runBundle(bundle, inputs(extra), { env: { GITHUB_API_URL: api.url, GITHUB_SHA: sha } });
}

async function setVersion(version: string, failHealth = false) {
  await writeFile(path.join(source, 'version.py'), `VERSION = "${version}"\n`);
  await rm(path.join(source, 'FAIL_HEALTH'), { force: true });
  if (failHealth) await writeFile(path.join(source, 'FAIL_HEALTH'), '');
}

const recordedRevision = async (id: string) =>
  (
    JSON.parse(await onHost(state, host, `cat /opt/${APP}/releases/${id}/.metalship/release.json`)) as {
      revision: string;
    }
  ).revision;

/** The calls since the last look, as `METHOD path state`. */
let seen = 0;
function newCalls(): string[] {
  const out = api.sequence().slice(seen);
  seen = api.calls.length;
  return out;
}

beforeAll(async () => {
  state = e2eState();
  host = state.hosts[0]!;
  source = await sampleAppCopy(APP);
  await setUpAppOnHost(state, host, APP, { redisDb: 8 });
  api = await fakeGitHub();
});
afterAll(async () => {
  await api?.close();
  await rm(source, { recursive: true, force: true });
});

const SHA2 = '2'.repeat(40);
const ids: Record<string, string> = {};
const deployments: Record<string, number> = {};
let head = '';

test("a deploy from a git checkout outside GitHub's SHA records the checkout's revision, and its deployment succeeds", async () => {
  // The source is a git work tree and GITHUB_SHA is absent: the revision is its HEAD.
  const git = (...args: string[]) =>
    execFileSync('git', ['-C', source, '-c', 'user.name=t', '-c', 'user.email=t@example.test', ...args], {
      encoding: 'utf8',
    }).trim();
  await setVersion('v1');
  git('init', '-q');
  git('add', '.');
  git('commit', '-qm', 'v1');
  head = git('rev-parse', 'HEAD');

  const r = await run('deploy', '');
  expect(r.stdout).not.toMatch(/::error::/);
  expect(outcome(r)).toBe('succeeded');
  ids.v1 = r.outputs['release-id']!;
  expect(await recordedRevision(ids.v1)).toBe(head);
  expect(listedInAnyOrder(newCalls())).toEqual(
    listedInAnyOrder([
      'POST /deployments',
      `POST /deployments/${api.deployments[0]!.id}/statuses in_progress`,
      `POST /deployments/${api.deployments[0]!.id}/statuses success`,
      'GET /deployments',
    ]),
  );
  deployments.v1 = api.deployments[0]!.id;
  const [create, progress, success] = api.calls;
  expect(create!.body).toMatchObject({ ref: head, environment: 'production', payload: { app: APP } });
  expect(progress!.body).toMatchObject({
    environment_url: SITE,
    log_url: expect.stringContaining('/actions/runs/'),
  });
  expect(success!.body).toMatchObject({
    state: 'success',
    auto_inactive: true,
    description: `${ids.v1} serves`,
  });
  expect(api.calls.every((c) => c.authorization === `token ${TOKEN}`)).toBe(true);
  expect(r.log).toContain(`GitHub deployment ${deployments.v1} to production: success`);
});

test('the next deploy makes the one before inactive', async () => {
  await setVersion('v2');
  const r = await run('deploy', SHA2);
  expect(outcome(r)).toBe('succeeded');
  ids.v2 = r.outputs['release-id']!;
  expect(await recordedRevision(ids.v2)).toBe(SHA2);
  deployments.v2 = api.deployments[1]!.id;
  expect(api.deployments[1]!.ref).toBe(SHA2);
  expect(listedInAnyOrder(newCalls())).toEqual(
    listedInAnyOrder([
      'POST /deployments',
      `POST /deployments/${deployments.v2}/statuses in_progress`,
      `POST /deployments/${deployments.v2}/statuses success`,
      'GET /deployments',
      `GET /deployments/${deployments.v1}/statuses`,
      `POST /deployments/${deployments.v1}/statuses inactive`,
    ]),
  );
});

test('a deploy failing verification is recorded as failed; the one serving stays active', async () => {
  await setVersion('v3', true);
  const r = await run('deploy', '3'.repeat(40));
  expect(r.code).toBe(1);
  expect(r.outputs['rolled-back']).toBe('true');
  const id = api.deployments[2]!.id;
  expect(listedInAnyOrder(newCalls())).toEqual(
    listedInAnyOrder([
      'POST /deployments',
      `POST /deployments/${id}/statuses in_progress`,
      `POST /deployments/${id}/statuses failure`,
    ]),
  );
  expect(api.calls.at(-1)!.body).toMatchObject({
    state: 'failure',
    auto_inactive: false,
    description: `${r.outputs['release-id']} failed; ${ids.v2} serves again`,
  });
  expect(api.deployments[1]!.statuses.at(-1)!.state).toBe('success');
});

test("a rollback records a deployment of the release it restores, at that release's recorded revision", async () => {
  // The workflow's own SHA is another commit: the rollback deploys v1's.
  const r = await run('rollback', '9'.repeat(40));
  expect(r.stdout).not.toMatch(/::error::/);
  expect(outcome(r)).toBe('succeeded');
  expect(r.outputs['release-id']).toBe(ids.v1);
  const id = api.deployments[3]!.id;
  expect(api.deployments[3]!.ref).toBe(head);
  expect(listedInAnyOrder(newCalls())).toEqual(
    listedInAnyOrder([
      'POST /deployments',
      `POST /deployments/${id}/statuses in_progress`,
      `POST /deployments/${id}/statuses success`,
      'GET /deployments',
      // Newest first: the failed v3 is left alone, v2 (serving until now) made inactive; v1's is inactive already.
      `GET /deployments/${api.deployments[2]!.id}/statuses`,
      `GET /deployments/${deployments.v2}/statuses`,
      `POST /deployments/${deployments.v2}/statuses inactive`,
      `GET /deployments/${deployments.v1}/statuses`,
    ]),
  );
  const create = api.calls[api.calls.length - 8]!;
  expect(create.body).toMatchObject({ payload: { app: APP, release: ids.v1, 'rolled-back-from': ids.v2 } });
});

test('a token that may not write deployments (403): one notice, and the deploy succeeds', async () => {
  api.refuse = 403;
  await setVersion('v4');
  const r = await run('deploy', '4'.repeat(40));
  expect(r.stdout).not.toMatch(/::error::/);
  expect(outcome(r)).toBe('succeeded');
  expect(r.outputs.healthy).toBe('true');
  expect(listedInAnyOrder(newCalls())).toEqual(listedInAnyOrder(['POST /deployments']));
  expect(r.stdout.match(/^::notice::.*$/gm)).toEqual([
    '::notice::GitHub deployment not recorded: the token may not write deployments (HTTP 403 creating the deployment); give it deployments: write, or set github-deployments: false',
  ]);
});

/**
 * A runner's forward proxy for plain HTTP (absolute-form requests), on
 * 127.0.0.1: the one place that knows where `name` is (127.0.0.1).
 */
async function forwardProxy(name: string): Promise<{ url: string; seen: string[]; close(): Promise<void> }> {
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    const target = new URL(req.url ?? '/', 'http://invalid.invalid');
    seen.push(`${req.method} ${target.host}${target.pathname}`);
    const upstream = http.request(
      {
        host: target.hostname === name ? '127.0.0.1' : target.hostname,
        port: target.port,
        path: target.pathname + target.search,
        method: req.method,
        headers: req.headers,
      },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

test("behind the runner's proxy (http_proxy), the calls go through it, as @actions/github's did", async () => {
  api.refuse = null;
  const name = 'ghdep-api.invalid';
  const proxy = await forwardProxy(name);
  try {
    await setVersion('v5');
    const port = new URL(api.url).port;
    // The API's name resolves nowhere: only through the proxy do the calls arrive.
    const r = await runBundle('deploy', inputs(), {
      env: { GITHUB_API_URL: `http://${name}:${port}`, GITHUB_SHA: '5'.repeat(40), http_proxy: proxy.url },
    });
    expect(outcome(r)).toBe('succeeded');
    expect(r.log).toMatch(/GitHub deployment \d+ to production: success/);
    expect(proxy.seen).toContain(`POST ${name}:${port}/repos/metalship/e2e/deployments`);
  } finally {
    await proxy.close();
  }
});

test('an HTTPS API behind a proxy that never answers its tunnel: the call gives up within its 10 s, and the deploy succeeds', async () => {
  const sockets: net.Socket[] = [];
  const blackhole = net.createServer((socket) => void sockets.push(socket));
  await new Promise<void>((resolve) => blackhole.listen(0, '127.0.0.1', resolve));
  try {
    await setVersion('v6');
    const r = await runBundle('deploy', inputs(), {
      env: {
        GITHUB_API_URL: 'https://ghdep-api.invalid',
        GITHUB_SHA: '6'.repeat(40),
        https_proxy: `http://127.0.0.1:${(blackhole.address() as AddressInfo).port}`,
      },
    });
    expect(outcome(r)).toBe('succeeded');
    expect(sockets.length).toBeGreaterThan(0);
    expect(r.stdout).toMatch(
      /GitHub deployment not recorded: GitHub did not answer within 10 s \(creating the deployment\)/,
    );
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => blackhole.close(() => resolve()));
  }
});
