// Faults during a deploy on a real host: the network cut in the middle of the
// upload and of the switch, a migration that hangs silently, a disk that fills
// up. Afterwards a complete release serves, no lock blocks the next run beyond
// its stale-lock rule, and a re-run succeeds.
import { execFile } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  connectionInputs,
  e2eState,
  setUpAppOnHost,
  sampleAppCopy,
  httpGet,
  onHost,
  runBundle,
  sampleAppInputs,
  type E2EState,
} from '../support/e2e.js';

const run = promisify(execFile);
const APP = 'faulty';
const SERVER_NAME = 'faulty.test';
let state: E2EState;
let host: E2EState['hosts'][0];
let source: string;
let version = 0;

function inputs(extra: Record<string, string> = {}) {
  return {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs(APP, source),
    'server-name': SERVER_NAME,
    'lock-timeout': '90',
    ...extra,
  };
}

async function serving(): Promise<{ release: string; version: string }> {
  return JSON.parse((await httpGet(host.address, '/version', SERVER_NAME)).body) as {
    release: string;
    version: string;
  };
}

async function nextVersion(): Promise<string> {
  version++;
  await writeFile(path.join(source, 'version.py'), `VERSION = "f${version}"\n`);
  return `f${version}`;
}

/** The release that answers is complete, and current points at a complete release. */
async function expectCompleteReleaseServing(): Promise<void> {
  const now = await serving();
  expect(
    (await onHost(state, host, `cat /opt/${APP}/releases/${now.release}/.metalship/status`)).trim(),
  ).toBe('ready');
  expect((await onHost(state, host, `cat /opt/${APP}/current/.metalship/status`)).trim()).toBe('ready');
}

/** Runs a deploy and, when its output matches, cuts the host's link for `seconds`. */
async function deployWithNetworkCut(marker: RegExp, seconds: number): Promise<{ code: number; out: string }> {
  const link = `${host.name}-h`;
  let cut: Promise<void> | null = null;
  const r = await runBundle('deploy', inputs(), {
    env: { GITHUB_ACTOR: 'cut-run' },
    onOutput: (out) => {
      if (cut || !marker.test(out)) return;
      cut = (async () => {
        await run('ip', ['link', 'set', link, 'down']);
        await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
        await run('ip', ['link', 'set', link, 'up']);
      })();
    },
  });
  expect(cut).not.toBeNull();
  await cut;
  return { code: r.code, out: r.stdout };
}

beforeAll(async () => {
  state = e2eState();
  host = state.hosts[1]!;
  source = await sampleAppCopy('faulty');
  await setUpAppOnHost(state, host, APP, { redisDb: 2, dbPassword: 'f-pw' });
  await nextVersion();
  const first = await runBundle('deploy', inputs());
  expect(first.code).toBe(0);
});
afterAll(async () => {
  await run('ip', ['link', 'set', `${host.name}-h`, 'up']).catch(() => undefined);
  await rm(source, { recursive: true, force: true });
});

test.each([
  ['upload', /::group::Release/],
  ['switch', /starting \S+ in the (blue|green) slot/],
])(
  'the network cut during %s: the run fails, a complete release serves, a re-run succeeds',
  async (_phase, marker) => {
    const want = await nextVersion();
    const cut = await deployWithNetworkCut(marker, 40);
    expect(cut.code).not.toBe(0);
    expect(cut.out).toMatch(/connection|Keepalive|ended without an exit code/i);
    await expectCompleteReleaseServing();
    const rerun = await runBundle('deploy', inputs());
    expect(rerun.code).toBe(0);
    expect(await serving()).toEqual({ release: rerun.outputs['release-id'], version: want });
  },
);

test('a migration that hangs silently hits the idle timeout; the previous release keeps serving', async () => {
  const before = await serving();
  await writeFile(path.join(source, 'hang.py'), 'import time\ntime.sleep(120)\n');
  await nextVersion();
  const r = await runBundle(
    'deploy',
    inputs({
      migrate: 'true',
      'migrate-command': 'python hang.py',
      'migrate-backup': 'false',
      'command-idle-timeout': '5',
      'revision-command': 'true',
    }),
  );
  await rm(path.join(source, 'hang.py'));
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/printed nothing for 5 s \(idle timeout\); its processes were stopped/);
  expect(await serving()).toEqual(before);
  expect(
    (
      await onHost(state, host, `cat /opt/${APP}/releases/${r.outputs['release-id']}/.metalship/status`)
    ).trim(),
  ).toBe('failed');
  expect(await onHost(state, host, "pgrep -f 'python han[g].py' || echo none")).toBe('none\n');
});

test('a full disk during the upload fails the run cleanly; after space is freed a re-run succeeds', async () => {
  const before = await serving();
  // A 4 MiB file into a releases directory that has 1 MiB left.
  await onHost(
    state,
    host,
    `mount -t tmpfs -o size=1m tmpfs /opt/${APP}/releases.full 2>/dev/null || (mkdir -p /opt/${APP}/releases.full && mount -t tmpfs -o size=1m tmpfs /opt/${APP}/releases.full)`,
  );
  await onHost(
    state,
    host,
    `cp -a /opt/${APP}/releases/. /opt/${APP}/releases.full/ 2>/dev/null || true; mount --bind /opt/${APP}/releases.full /opt/${APP}/releases`,
  );
  await run('dd', [
    'if=/dev/urandom',
    `of=${path.join(source, 'big.bin')}`,
    'bs=1M',
    'count=4',
    'status=none',
  ]);
  await nextVersion();
  const r = await runBundle('deploy', inputs());
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/No space left on device/);
  expect(await serving()).toEqual(before);
  await onHost(
    state,
    host,
    `umount /opt/${APP}/releases && umount /opt/${APP}/releases.full && rmdir /opt/${APP}/releases.full`,
  );
  await rm(path.join(source, 'big.bin'));
  const want = await nextVersion();
  const rerun = await runBundle('deploy', inputs());
  expect(rerun.code).toBe(0);
  expect(await serving()).toEqual({ release: rerun.outputs['release-id'], version: want });
});
