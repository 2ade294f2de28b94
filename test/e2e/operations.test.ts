// Day-to-day operations against real hosts: remote output decoded whole, the
// command line, status, and freezing deploys with lock and unlock.
import { parseKnownHosts, pinnedAlgorithms, verifyHostKey } from '../../src/inputs/known-hosts.js';
import { Log } from '../../src/log.js';
import { connect } from '../../src/transport/ssh.js';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  connectionInputs,
  e2eState,
  onHost,
  outcome,
  runBundle,
  runCli,
  sampleAppCopy,
  sampleAppInputs,
  setUpAppOnHost,
  type E2EState,
} from '../support/e2e.js';

const APP = 'opsapp';
let state: E2EState;
let host: E2EState['hosts'][0];
let source: string;
let home: string;

beforeAll(async () => {
  state = e2eState();
  host = state.hosts[0]!;
  source = await sampleAppCopy('ops');
  home = await mkdtemp(path.join(tmpdir(), 'metalship-home-'));
  await mkdir(path.join(home, '.ssh'));
  await writeFile(path.join(home, '.ssh', 'deploy'), state.key.privateKey, { mode: 0o600 });
  await writeFile(path.join(home, 'known_hosts'), host.knownHosts);
  await setUpAppOnHost(state, host, APP, { redisDb: 5 });
});
afterAll(async () => {
  await rm(source, { recursive: true, force: true });
  await rm(home, { recursive: true, force: true });
});

test('multi-byte text printed one byte at a time arrives intact, streamed and collected', async () => {
  const host = state.hosts[0]!;
  const pinned = parseKnownHosts(host.knownHosts);
  if (typeof pinned === 'string') throw new Error(pinned);
  const logged: string[] = [];
  const conn = await connect(
    { host: host.address, port: host.port, user: 'root', label: host.address },
    {
      privateKey: state.key.privateKey,
      hostKeys: {
        verify: (h, p, k) => verifyHostKey(pinned, h, p, k),
        algorithms: (h, p) => pinnedAlgorithms(pinned, h, p),
      },
      connectTimeoutMs: 20000,
      idleTimeoutMs: 60000,
      commandTimeoutMs: 600000,
    },
    new Log((l) => logged.push(l)),
  );
  try {
    // Each byte its own write, a pause between: each reaches us in its own packet.
    const text = 'é 日本 🚀\nsecond é\n';
    const r = await conn.run(
      [
        `bytes=$(printf '%s' '${text}' | od -An -v -tx1)`,
        'for b in $bytes; do printf "\\x$b"; printf "\\x$b" >&2; sleep 0.02; done',
      ].join('\n'),
      { stream: true },
    );
    expect(r.stdout).toBe(text);
    expect(r.stderr).toBe(text);
    const label = `[${host.address}] `;
    expect(logged.filter((l) => l.startsWith(label))).toEqual(
      ['é 日本 🚀', 'é 日本 🚀', 'second é', 'second é'].map((l) => label + l),
    );
  } finally {
    await conn.close();
  }
});

/** The command line as the README writes it: the key and known_hosts read with @~/ and @. */
const cli = (action: string, ...args: string[]) =>
  runCli(
    [
      action,
      '--hosts',
      host.address,
      '--ssh-key',
      '@~/.ssh/deploy',
      '--known-hosts',
      '@known_hosts',
      '--app',
      APP,
      ...args,
    ],
    { home, secrets: { 'ssh-key': state.key.privateKey } },
  );

/** The sample app's deploy from the command line: bare boolean flags, values that start with --. */
// Its own server name: a site without one is nginx's default server, which the shared hosts' other apps' sites would clash with.
const serviceArgs = [
  '--server-name',
  `${APP}.test`,
  '--worker-command',
  'python -m worker',
  '--scheduler-command',
  'python -m scheduler',
];
const deployArgs = () => [
  '--source',
  source,
  '--system-site-packages',
  '--pip-args',
  '--no-index',
  // The sample app has an alembic.ini, but this app has no database: no migration.
  '--no-migrate',
  ...serviceArgs,
];

const releasesOnHost = async () =>
  (
    await onHost(
      state,
      host,
      `ls /opt/${APP}/releases; readlink /opt/${APP}/current; cat /opt/${APP}/.metalship/active-slot`,
    )
  ).trim();

test('the command line: --version, lock freezes deploys naming the reason, status shows it all, unlock lets deploys run', async () => {
  const version = await runCli(['--version'], { home });
  expect(version.stdout).toMatch(/^metalship \d+\.\d+\.\d+\n$/);

  // Two deploys: a current release and a warm standby.
  const ids: string[] = [];
  for (let i = 0; i < 2; i++) {
    const r = await runBundle('deploy', {
      ...connectionInputs(state, [host]),
      ...sampleAppInputs(APP, source),
      'server-name': `${APP}.test`,
    });
    expect(outcome(r)).toBe('succeeded');
    ids.push(r.outputs['release-id']!);
  }

  const reason = 'incident 7: database failover; ask #ops before deploying';
  const lock = await cli('lock', '--reason', reason);
  expect(lock.stderr).toBe('');
  expect(outcome(lock)).toBe('succeeded');
  // Root's, not the app user's: it can neither change nor remove it.
  expect(await onHost(state, host, `stat -c '%U %a' /opt/${APP}/.metalship/freeze`)).toBe('root 600\n');
  expect(
    await onHost(
      state,
      host,
      `runuser -u ${APP} -- sh -c 'echo x >> /opt/${APP}/.metalship/freeze || rm -f /opt/${APP}/.metalship/freeze' 2>&1 || echo refused`,
    ),
  ).toMatch(/Permission denied[\s\S]*\nrefused\n$/);
  expect(await onHost(state, host, `cat /opt/${APP}/.metalship/freeze`)).toContain(reason);

  const before = await releasesOnHost();
  const refused = await cli('deploy', ...deployArgs());
  expect(refused.code).toBe(1);
  expect(refused.stdout).toContain(
    `deploys of ${APP} are frozen; the deploy was refused and nothing was changed`,
  );
  expect(refused.stdout).toContain(reason);
  // The error alone on a terminal: no job summary markdown after it.
  expect(refused.stdout).not.toMatch(/^##/m);
  expect(await releasesOnHost()).toBe(before);

  // A second run holds the deploy lock while status looks.
  await onHost(
    state,
    host,
    `setsid nohup bash -c 'exec 9>>/opt/${APP}/.metalship/deploy.lock; flock 9; echo "deploy by tester since now" > /opt/${APP}/.metalship/lock-holder; sleep 600' >/dev/null 2>&1 < /dev/null & echo $! > /run/ops-holder.pid`,
  );
  let status;
  try {
    status = await cli('status', '--history-lines', '5');
  } finally {
    await onHost(
      state,
      host,
      `pkill -s "$(ps -o sid= -p "$(cat /run/ops-holder.pid)" | tr -d ' ')" || true; : > /opt/${APP}/.metalship/lock-holder`,
    );
  }
  expect(outcome(status)).toBe('succeeded');
  expect(status.stdout).toContain(`| ${ids[1]} | ready | current (`);
  expect(status.stdout).toMatch(
    new RegExp(`\\| ${ids[0]} \\| ready \\| standby \\((blue|green), running\\)`),
  );
  expect(status.stdout).toContain(`Deploys frozen since`);
  expect(status.stdout).toContain(reason);
  expect(status.stdout).toContain('Deploy lock: held by deploy by tester since now');
  expect(status.stdout).toContain(`switched to ${ids[1]}`);
  expect(status.stdout).toContain('frozen=true');

  // While frozen a rollback only goes back: one that would change the schema is refused and changes nothing.
  const frozenBefore = await releasesOnHost();
  const down = await cli('rollback', ...serviceArgs, '--migrate-down');
  expect(down.code).toBe(1);
  expect(down.stdout + down.stderr).toMatch(
    /are frozen, and a rollback then only goes back.*migrate-down changes the schema/,
  );
  expect(await releasesOnHost()).toBe(frozenBefore);

  // A rollback passes the freeze, with a warning (the incident's remedy).
  const rollback = await cli('rollback', ...serviceArgs);
  expect(rollback.stdout + rollback.stderr).not.toMatch(/^error/m);
  expect(outcome(rollback)).toBe('succeeded');
  expect(rollback.stdout).toMatch(/warning: rollback passes the deploy freeze: .*incident 7/);
  expect(rollback.stdout).toContain(`release-id=${ids[0]}`);

  const rolledBack = await cli('status');
  expect(rolledBack.stdout).toContain(`| ${ids[1]} | bad |`);
  expect(rolledBack.stdout).toMatch(new RegExp(`\\| ${ids[0]} \\| ready \\| current \\((blue|green)\\)`));

  const unlock = await cli('unlock');
  expect(outcome(unlock)).toBe('succeeded');
  expect(unlock.stdout).toContain('was-frozen=true');
  expect(await onHost(state, host, `test -e /opt/${APP}/.metalship/freeze && echo frozen || echo free`)).toBe(
    'free\n',
  );

  const deployed = await cli('deploy', ...deployArgs());
  expect(deployed.stdout).not.toMatch(/^error/m);
  expect(outcome(deployed)).toBe('succeeded');
  const id = /^release-id=(\S+)$/m.exec(deployed.stdout)?.[1];
  expect(id).toBeDefined();

  const after = await cli('status');
  expect(outcome(after)).toBe('succeeded');
  expect(after.stdout).toContain(`| ${id} | ready | current (`);
  expect(after.stdout).toContain('Deploys: not frozen');
  expect(after.stdout).toContain('Deploy lock: free');
  expect(after.stdout).toContain('frozen=false');
});

test('the actions: status reports JSON in an output, lock and unlock as steps', async () => {
  const inputs = { ...connectionInputs(state, [host]), app: APP };
  const lock = await runBundle('lock', { ...inputs, reason: 'release freeze for the audit' });
  expect(outcome(lock)).toBe('succeeded');
  const status = await runBundle('status', inputs);
  expect(outcome(status)).toBe('succeeded');
  expect(status.outputs.frozen).toBe('true');
  const [h] = JSON.parse(status.outputs.status!) as {
    host: string;
    current: string;
    frozen: boolean;
    freeze: { reason: string };
  }[];
  expect(h).toMatchObject({
    host: host.address,
    frozen: true,
    freeze: { reason: 'release freeze for the audit' },
  });
  expect(h!.current).toMatch(/^\d{8}_\d{6}/);
  expect(status.summary).toContain('## metalship status');
  expect(status.summary).toContain(`| ${h!.current} | ready | current (`);
  const release = await runBundle('release', {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs(APP, source),
  });
  expect(release.code).toBe(1);
  expect(release.stdout).toContain('release freeze for the audit');
  const unlock = await runBundle('unlock', inputs);
  expect(outcome(unlock)).toBe('succeeded');
  expect(unlock.outputs['was-frozen']).toBe('true');
});
