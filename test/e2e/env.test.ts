// Config and secrets go out like releases: a deploy carrying `env` starts the
// new release in the standby slot with that env, verifies it and moves traffic
// with no failed request; the env is the release's own file (mode 600, the app
// user's, never a link the app user could turn), and a rollback brings back the
// env that served with its release, in the api and in the worker alike. Without
// env, a release copies the shared .env that provision writes.
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseEnvText } from '../../src/inputs/dotenv.js';
import {
  connectionInputs,
  e2eState,
  httpGet,
  onHost,
  outcome,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  type E2EState,
} from '../support/e2e.js';
import { startLoad } from '../support/load.js';

const APP = 'envs';
const SERVER = 'envs.test';
let state: E2EState;
let source: string;
let host: E2EState['hosts'][0];

function inputs(extra: Record<string, string> = {}) {
  return {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs(APP, source),
    'scheduler-command': '',
    'server-name': SERVER,
    'verify-path': '/version',
    'expect-body': '{release}',
    ...extra,
  };
}

/** An env as a user writes it: a greeting to read back and a secret that must never be logged. */
function envText(greeting: string): string {
  return `GREETING=${greeting}\nAPI_TOKEN="tok-${greeting}-${Date.now()}-s3cr3t"\n`;
}

async function served(): Promise<{ release: string; greeting: string | null }> {
  return JSON.parse((await httpGet(host.address, '/greeting', SERVER)).body) as {
    release: string;
    greeting: string | null;
  };
}

/** GREETING in the running worker's environment, as the kernel has it. */
async function workerGreeting(): Promise<string> {
  return (
    await onHost(
      state,
      host,
      `pid=$(systemctl show -p MainPID --value "${APP}-worker@$(basename "$(readlink /opt/${APP}/current)").service"); tr '\\0' '\\n' < /proc/$pid/environ | sed -n 's/^GREETING=//p'`,
    )
  ).trim();
}

/** The release's .env as root sees it: type, mode and owner, without following a link. */
async function envFile(release: string): Promise<string> {
  return (await onHost(state, host, `stat -c '%F %a %U' /opt/${APP}/releases/${release}/.env`)).trim();
}

async function deploy(greeting: string | null, version: string): Promise<string> {
  await writeFile(path.join(source, 'version.py'), `VERSION = "${version}"\n`);
  const r = await runBundle('deploy', inputs(greeting === null ? {} : { env: envText(greeting) }));
  expect(outcome(r)).toBe('succeeded');
  return r.outputs['release-id']!;
}

beforeAll(async () => {
  state = await e2eState();
  host = state.hosts[0]!;
  source = await sampleAppCopy(APP);
});

afterAll(async () => {
  await rm(source, { recursive: true, force: true });
});

test('a deploy carrying env serves with it, with no failed request; the env is the release’s own file, mode 600', async () => {
  const one = await deploy('one', 'v1');
  expect(await served()).toEqual({ release: one, greeting: 'one' });
  expect(await workerGreeting()).toBe('one');
  expect(await envFile(one)).toBe(`regular file 600 ${APP}`);

  const load = startLoad(`http://${host.address}/greeting`, {
    workers: 4,
    pauseMs: 5,
    headers: { Host: SERVER },
  });
  let two: string;
  try {
    two = await deploy('two', 'v2');
  } finally {
    const report = await load.stop();
    expect(report.requests).toBeGreaterThan(0);
    expect(report.failures).toEqual({});
  }
  expect(await served()).toEqual({ release: two, greeting: 'two' });
  expect(await workerGreeting()).toBe('two');
  expect(await envFile(two)).toBe(`regular file 600 ${APP}`);
  // The first release keeps its own env: a rollback target that still says what served.
  expect(
    (await onHost(state, host, `sed -n 's/^GREETING=//p' /opt/${APP}/releases/${one}/.env`)).trim(),
  ).toBe('one');

  // A rollback brings back the env that served with the release, in the api and the worker.
  const back = await runBundle('rollback', { ...inputs(), 'release-id': one });
  expect(outcome(back)).toBe('succeeded');
  expect(await served()).toEqual({ release: one, greeting: 'one' });
  expect(await workerGreeting()).toBe('one');
});

test('a deploy without env copies the shared .env: a later change reaches the services only with the next deploy', async () => {
  const shared = (greeting: string) =>
    onHost(
      state,
      host,
      `printf 'GREETING=${greeting}\\n' > /opt/${APP}/.env && chown ${APP}:${APP} /opt/${APP}/.env && chmod 600 /opt/${APP}/.env`,
    );
  // The app's shared .env, as provision writes it.
  await shared('shared');
  const id = await deploy(null, 'v3');
  expect(await envFile(id)).toBe(`regular file 600 ${APP}`);
  expect(await served()).toEqual({ release: id, greeting: 'shared' });
  expect(await workerGreeting()).toBe('shared');
  // Changed under running services (a provision run): a worker restarting on its own keeps the release's env.
  await shared('changed');
  await onHost(
    state,
    host,
    `systemctl restart "${APP}-worker@$(basename "$(readlink /opt/${APP}/current)").service"`,
  );
  expect(await workerGreeting()).toBe('shared');
  const next = await deploy(null, 'v4');
  expect(await served()).toEqual({ release: next, greeting: 'changed' });
  expect(await workerGreeting()).toBe('changed');
});

test('each value reaches the processes as the env input is read: #, quotes, spaces, =, backslashes, unicode, lines', async () => {
  const text = [
    "HASH='a#b'",
    'HASH_SPACED="c # d"',
    `QUOTES="it's \\"q\\""`,
    'SPACES =   two  words   ',
    'EQUALS=k=v==w',
    "BACKSLASH='C:\\dir\\n'",
    'ESCAPED="x\\\\y\\$z\\`w"',
    'REGEX="\\d+\\.\\s"',
    'UNICODE=grüße ✓ ☃',
    'LINES="one',
    '  two"',
    'EMPTY=',
    `API_TOKEN=tok-${Date.now()}-s3cr3t`,
  ].join('\n');
  const parsed = parseEnvText(text);
  if ('error' in parsed) throw new Error(parsed.error);
  // What the parser says systemd reads, written out: the test cannot agree with a wrong parser by accident.
  expect(parsed.values).toMatchObject({
    HASH: 'a#b',
    HASH_SPACED: 'c # d',
    QUOTES: 'it\'s "q"',
    SPACES: 'two  words',
    EQUALS: 'k=v==w',
    BACKSLASH: 'C:\\dir\\n',
    ESCAPED: 'x\\y$z`w',
    REGEX: '\\d+\\.\\s',
    UNICODE: 'grüße ✓ ☃',
    LINES: 'one\n  two',
    EMPTY: '',
  });
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v5"\n');
  const r = await runBundle('deploy', inputs({ env: text }));
  expect(outcome(r)).toBe('succeeded');
  // The worker's environment as the kernel has it (NUL-separated, base64 to keep every byte).
  const environ = Buffer.from(
    await onHost(
      state,
      host,
      `pid=$(systemctl show -p MainPID --value "${APP}-worker@$(basename "$(readlink /opt/${APP}/current)").service"); base64 -w0 < /proc/$pid/environ`,
    ),
    'base64',
  ).toString('utf8');
  const got = Object.fromEntries(
    environ
      .split('\0')
      .filter((kv) => kv.includes('='))
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
  for (const [key, value] of Object.entries(parsed.values)) expect([key, got[key]]).toEqual([key, value]);

  // What systemd would read otherwise is refused before any host is contacted, naming the line.
  const refused = await runBundle('deploy', inputs({ env: `A=1\nexport B=2\n` }));
  expect(refused.code).not.toBe(0);
  expect(refused.stdout).toMatch(/::error::Input 'env': line 2: starts with export/);
  expect(refused.stdout).not.toMatch(/Connecting/);
});
