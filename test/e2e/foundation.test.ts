// The transport and input handling, end to end against two real hosts.
import { writeFile, rm } from 'node:fs/promises';
import path from 'node:path';
import {
  connectionInputs,
  e2eState,
  onHost,
  outcome,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  type E2EState,
} from '../support/e2e.js';

let state: E2EState;
let source: string;

beforeAll(async () => {
  state = e2eState();
  source = await sampleAppCopy('src');
});
afterAll(async () => {
  await rm(source, { recursive: true, force: true });
});

test('a release reaches two hosts over pinned host keys, one connection each', async () => {
  const hosts = state.hosts.slice(0, 2);
  const r = await runBundle('release', {
    ...connectionInputs(state, hosts),
    ...sampleAppInputs('twohosts', source),
  });
  expect(r.stderr + r.stdout).not.toMatch(/error/i);
  expect(outcome(r)).toBe('succeeded');
  const id = r.outputs['release-id']!;
  expect(id).toMatch(/^\d{8}_\d{6}$/);
  const results = JSON.parse(r.outputs.results!) as { host: string; ok: boolean }[];
  expect(results.map((x) => x.ok)).toEqual([true, true]);
  for (const h of hosts) {
    expect((await onHost(state, h, `cat /opt/twohosts/releases/${id}/.metalship/status`)).trim()).toBe(
      'ready',
    );
  }
  expect(r.summary).toContain(`Release **${id}**`);
});

test('a host offering a key other than the pinned one is refused with the fingerprint it offered', async () => {
  const [h1, h2] = state.hosts as [E2EState['hosts'][0], E2EState['hosts'][0]];
  // Pin host 2's key under host 1's address: host 1 then offers an unpinned key.
  const wrong = h2.knownHosts
    .split('\n')
    .map((l) => l.replace(h2.address, h1.address))
    .join('\n');
  const r = await runBundle('release', {
    ...connectionInputs(state, [h1]),
    'known-hosts': wrong,
    ...sampleAppInputs('keytest', source),
  });
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(
    /host key verification failed for 10\.213\.\d+\.2: the host offered \S+ SHA256:[A-Za-z0-9+/]+/,
  );
  expect(await onHost(state, h1, 'test -e /opt/keytest && echo exists || echo absent')).toBe('absent\n');
});

test('bad input fails before any connection, naming the input and what is expected', async () => {
  const r = await runBundle('release', {
    ...connectionInputs(state),
    ...sampleAppInputs('badinput', source),
    'keep-releases': 'many',
    hosts: `${state.hosts[0]!.address}:70000`,
  });
  expect(r.code).toBe(1);
  expect(r.stdout).toContain(
    "Input 'keep-releases': 'many' is not a whole number; expected a whole number from 2 to 100.",
  );
  expect(r.stdout).toContain("Input 'hosts':");
  expect(r.stdout).toContain('port 70000 is out of range');
  expect(r.summary).toContain('No host was contacted');
  expect(r.stdout).not.toMatch(/Connecting/);
  expect(await onHost(state, state.hosts[0]!, 'test -e /opt/badinput && echo exists || echo absent')).toBe(
    'absent\n',
  );
});

test('a failing remote command fails the action with its exit code and stderr tail; secrets stay masked', async () => {
  const secret = 'hunter2-passphrase-Zq9';
  const broken = await sampleAppCopy('broken');
  // pip prints the requirement it cannot find: the secret then appears in remote output.
  await writeFile(path.join(broken, 'requirements.txt'), `${secret}\n`);
  const r = await runBundle('release', {
    ...connectionInputs(state),
    ...sampleAppInputs('failing', broken),
    'ssh-key-passphrase': secret,
  });
  await rm(broken, { recursive: true, force: true });
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/building release \S+ failed on 10\.213\.\d+\.2 with exit code 1:/);
  expect(r.stdout).toMatch(/No matching distribution found for \*\*\*/);
  expect(r.log).not.toContain(secret);
  expect(r.log).not.toContain(state.key.privateKey.split('\n')[1]!);
  const status = await onHost(state, state.hosts[0]!, 'cat /opt/failing/releases/*/.metalship/status');
  expect(status.trim()).toBe('failed');
});

test('a long silent command hits the idle timeout', async () => {
  const slow = await sampleAppCopy('slow');
  // The import check imports this module, which sits silent for a minute.
  await writeFile(path.join(slow, 'sleepy.py'), 'import time\ntime.sleep(60)\napp = None\n');
  const r = await runBundle('release', {
    ...connectionInputs(state),
    ...sampleAppInputs('sleepy', slow),
    'app-module': 'sleepy:app',
    'command-idle-timeout': '5',
  });
  await rm(slow, { recursive: true, force: true });
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/printed nothing for 5 s \(idle timeout\); its processes were stopped/);
  // The silent import is gone from the host, not left running.
  expect(await onHost(state, state.hosts[0]!, "pgrep -f 'import-check .*sleepy:ap[p]' || echo none")).toBe(
    'none\n',
  );
});
