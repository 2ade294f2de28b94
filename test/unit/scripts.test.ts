// The remote scripts as text: every builder's output parses with bash -n, and
// values from inputs arrive quoted. Their behaviour is tested on real hosts (e2e).
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { layout } from '../../src/remote/layout.js';
import { firstEnding, lockEvent, lockScript } from '../../src/remote/lock.js';
import { migrateStep } from '../../src/remote/migrate.js';
import { siteConf, upstreamConf } from '../../src/remote/nginx.js';
import { markStep } from '../../src/remote/release.js';
import {
  cleanupStep,
  pickRollbackTarget,
  planCleanup,
  verifyStep,
  type ReleaseListing,
} from '../../src/remote/verify.js';
import { killSessionScript, remoteScript, wrapScript } from '../../src/remote/session.js';
import { bashErrors } from '../support/bash.js';
import { rootSandbox } from '../support/sandbox.js';
import { HOSTILE, shopLayout, MIGRATE, scripts, units } from '../support/scripts.js';

test.each(Object.keys(scripts))('the %s script parses with bash -n', (name) => {
  expect(bashErrors(scripts[name]!)).toBe('');
});

test('hostile values written by the scripts arrive byte for byte and never run', () => {
  const root = rootSandbox('lock');
  const marker = `${root}/pwned`;
  const hostile = HOSTILE.replaceAll('/tmp/pwned', marker);
  const sandbox = layout('shop', root);
  execFileSync('bash', ['-se'], {
    input: wrapScript(
      lockScript(sandbox, { action: 'deploy', actor: hostile, runUrl: '', startedAt: 'now' }, 5),
    ),
  });
  execFileSync('bash', ['-se'], { input: wrapScript(markStep(sandbox, 'r1', 'failed', hostile).script) });
  const holder = execFileSync('cat', [sandbox.lockHolder], { encoding: 'utf8' });
  const history = execFileSync('cat', [sandbox.history], { encoding: 'utf8' });
  execFileSync('rm', ['-rf', root]);
  // The run ended without releasing: the holder is kept as evidence, with the actor as given.
  expect(holder).toMatch(/^abandoned at .*: deploy by it's \$\(touch .*\) `id` ; rm -rf \/ "x"$/m);
  expect(history).toContain(`marked failed: ${hostile.split('\n')[0]}`);
  expect(() => execFileSync('test', ['-e', marker])).toThrow();
});

test('the lock holder stops what the run left running before it lets the lock go, and only then', () => {
  const root = rootSandbox('lock');
  const sandbox = layout('shop', root);
  const holder = { action: 'deploy', actor: 'a', runUrl: '', startedAt: 'now' };
  const leftovers = `echo "stopped leftovers; holder: $(cat ${root}/.metalship/lock-holder)" >> ${root}/log`;
  // The run ends without releasing (stdin closes): leftovers stopped, then the holder marked abandoned.
  execFileSync('bash', ['-se'], { input: wrapScript(lockScript(sandbox, holder, 5, leftovers)) });
  const abandoned = execFileSync('cat', [`${root}/log`], { encoding: 'utf8' });
  // A run that releases the lock leaves nothing to stop.
  execFileSync('bash', ['-se'], {
    input: wrapScript(lockScript(sandbox, holder, 5, leftovers)) + 'release\n',
  });
  const after = execFileSync('cat', [`${root}/log`], { encoding: 'utf8' });
  execFileSync('rm', ['-rf', root]);
  expect(abandoned).toBe('stopped leftovers; holder: deploy by a since now (no run URL)\n');
  expect(after).toBe(abandoned);
});

test("the first step under the lock runs whole, bounded, and its text reaches none of its commands' environments", () => {
  const root = rootSandbox('lock-first');
  const sandbox = layout('shop', root);
  const holder = { action: 'rollback', actor: 'a', runUrl: '', startedAt: 'now' };
  const first = "echo 'read ✓'; env | grep -c __metalship || true; echo oops >&2; exit 3";
  const out = execFileSync('bash', ['-se'], {
    input: remoteScript(lockScript(sandbox, holder, 5, '', first)) + 'release\n',
    encoding: 'utf8',
  });
  execFileSync('rm', ['-rf', root]);
  expect(out).toMatch(/\nLOCKED\n/);
  expect(firstEnding(out)).toEqual({ code: 3, stdout: 'read ✓\n0\n', stderr: 'oops\n' });
});

// Writes into /run/metalship-sessions, as the scripts do on a host.
const asRoot = process.getuid?.() === 0 ? test : test.skip;
asRoot("stopping the sessions of a run ends every process in them, and no other run's", () => {
  const sh = (cmd: string) => execFileSync('bash', ['-c', cmd], { encoding: 'utf8' }).trim();
  // A script in a session of its own (as sshd starts each one): bash, a child in the background, one in front.
  const start = (token: string) =>
    execFileSync('bash', ['-c', 'setsid bash -se <&0 >/dev/null 2>&1 & echo $!'], {
      input: wrapScript('sleep 300 & sleep 300', token),
      encoding: 'utf8',
    }).trim();
  const run = `unit${process.pid}`;
  const other = `other${process.pid}`;
  const sids = [start(`${run}-a`), start(`${run}-b`), start(`${other}-c`)];
  // Zombies do not count: this machine's init may take a while to reap them.
  const alive = () => sids.map((sid) => Number(sh(`ps -o stat= -s ${sid} | grep -vc '^Z' || true`)));
  sh(
    `for i in $(seq 50); do [ "$(ps -o stat= -s ${sids.join(',')} | grep -vc '^Z')" = 9 ] && break; sleep 0.1; done`,
  );
  const before = alive();
  execFileSync('bash', ['-se'], { input: wrapScript(killSessionScript(`${run}-*`)) });
  const after = alive();
  const files = sh(`ls /run/metalship-sessions/ | grep -e ${run}- -e ${other}- || true`);
  execFileSync('bash', ['-se'], { input: wrapScript(killSessionScript(`${other}-*`)) });
  expect(before).toEqual([3, 3, 3]);
  expect(after).toEqual([0, 0, 3]);
  expect(files).toBe(`${other}-c`);
  expect(alive()).toEqual([0, 0, 0]);
});

test('cleanup marks a release before removing it, so a removal cut short leaves nothing that looks ready', () => {
  const root = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
  const sandbox = layout('shop', root);
  try {
    execFileSync('bash', [
      '-c',
      `mkdir -p ${root}/releases/old/.metalship ${root}/releases/old/code && echo ready > ${root}/releases/old/.metalship/status`,
    ]);
    // A removal cut short before rm got anywhere: the status is what a listing then sees.
    const cut = cleanupStep(sandbox, { releases: ['old'], venvs: [] }).script.replace('rm -rf --', 'true');
    execFileSync('bash', ['-se'], { input: wrapScript(cut), stdio: 'pipe' });
    expect(execFileSync('cat', [`${root}/releases/old/.metalship/status`], { encoding: 'utf8' })).toBe(
      'removing\n',
    );
    const cleanup = cleanupStep(sandbox, { releases: ['old'], venvs: [] });
    const out = execFileSync('bash', ['-se'], { input: wrapScript(cleanup.script), encoding: 'utf8' });
    expect(cleanup.parse(out)).toEqual({ removed: ['release old'], kept: [] });
    expect(execFileSync('ls', [`${root}/releases`], { encoding: 'utf8' })).toBe('');
  } finally {
    execFileSync('rm', ['-rf', root]);
  }
});

test('cleanup keeps a release whose worker still finishes its jobs, and every virtualenv then', () => {
  const root = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
  const sandbox = layout('shop', root);
  try {
    execFileSync('bash', [
      '-c',
      `mkdir -p ${root}/bin ${root}/venvs/py-old ${root}/releases/busy/.metalship ${root}/releases/idle/.metalship && ` +
        // systemd as a draining worker shows it: the busy release's still stopping.
        `printf '#!/bin/sh\\ncase "$*" in *shop-worker@busy.service*) echo deactivating ;; *) echo inactive ;; esac\\n' > ${root}/bin/systemctl && chmod +x ${root}/bin/systemctl`,
    ]);
    const cleanup = cleanupStep(sandbox, { releases: ['busy', 'idle'], venvs: ['py-old'] });
    const out = execFileSync('bash', ['-se'], {
      input: wrapScript(cleanup.script),
      encoding: 'utf8',
      env: { ...process.env, PATH: `${root}/bin:${process.env.PATH}` },
    });
    expect(cleanup.parse(out)).toEqual({
      removed: ['release idle'],
      kept: ['release busy: its worker is still finishing its jobs'],
    });
    expect(execFileSync('ls', [`${root}/releases`, `${root}/venvs`], { encoding: 'utf8' })).toContain('busy');
    expect(execFileSync('ls', [`${root}/venvs`], { encoding: 'utf8' })).toBe('py-old\n');
  } finally {
    execFileSync('rm', ['-rf', root]);
  }
});

/**
 * The units check of the scheduler right after a restart (notify), run here
 * against `fake` as systemctl (written into root/bin): its parsed outcome and output.
 */
function schedulerCheckWithFake(root: string, fake: string, timeout: number, env: Record<string, string>) {
  writeFileSync(`${root}/bin/systemctl`, fake, { mode: 0o755 });
  const check = verifyStep({
    layout: shopLayout,
    path: '/h',
    timeout,
    interval: 1,
    stableSeconds: 0,
    notify: true,
    restarted: true,
    expectStatus: 200,
    expectBody: '',
    units: ['shop-scheduler.service'],
    api: false,
  });
  const out = execFileSync('bash', ['-se'], {
    input: wrapScript(check.script),
    encoding: 'utf8',
    env: { ...process.env, ...env, LIVE_PID: String(process.pid), PATH: `${root}/bin:${process.env.PATH}` },
  });
  return { outcome: check.parse(out), out };
}

test('right after a restart, a unit systemd could not place (219/CGROUP) or spawn (result: resources) is started again, twice at most; an app that exits is not', () => {
  const root = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
  // systemd as seen after a start that failed to place the process: auto-restart, status 219;
  // a restart brings it up unless STUCK.
  const fake = [
    '#!/bin/bash',
    `state=${root}/state`,
    'case "$1" in',
    '  list-jobs) exit 0 ;;',
    `  reset-failed|restart) echo "$*" >> ${root}/calls; if [ "$1" = restart ] && [ -z "$STUCK" ]; then echo up > "$state"; fi ;;`,
    '  show)',
    '    if [ "$(cat "$state" 2>/dev/null)" = up ]; then status=0; shown="ActiveState=active\\nSubState=running\\nMainPID=$LIVE_PID\\n";',
    '    else status=${EXIT_STATUS:-219}; shown="ActiveState=activating\\nSubState=auto-restart\\nMainPID=0\\n"; fi',
    '    case "$*" in *ExecMainStatus*Result*) printf "ExecMainStatus=%s\\nResult=%s\\n" "$status" "${RESULT:-exit-code}" ;; *--value*NRestarts*|*NRestarts*--value*) echo 0 ;; *) printf "$shown" ;; esac ;;',
    'esac',
    '',
  ].join('\n');
  const run = (env: Record<string, string>) => {
    execFileSync('bash', ['-c', `mkdir -p ${root}/bin && rm -f ${root}/state ${root}/calls`]);
    const ran = schedulerCheckWithFake(root, fake, 3, env);
    const calls = execFileSync('bash', ['-c', `cat ${root}/calls 2>/dev/null || true`], { encoding: 'utf8' });
    return { ...ran, calls };
  };
  try {
    const once = run({});
    expect(once.out).toContain(
      "systemd could not start shop-scheduler.service's process (219/CGROUP): starting it again",
    );
    expect(once.outcome.unitsDown).toEqual([]);
    expect(once.outcome.unitNotes).toEqual([
      "systemd could not start shop-scheduler.service's process (219/CGROUP): starting it again",
    ]);
    expect(once.calls).toBe(
      'reset-failed shop-scheduler.service\nrestart --no-block shop-scheduler.service\n',
    );
    const stuck = run({ STUCK: '1' });
    expect(stuck.outcome.unitsDown).toEqual(['shop-scheduler.service']);
    expect(stuck.calls.match(/^restart /gm)).toHaveLength(2);
    // The app's own exit status is the app's: no second chance.
    const crashed = run({ EXIT_STATUS: '1' });
    expect(crashed.outcome.unitsDown).toEqual(['shop-scheduler.service']);
    expect(crashed.calls).toBe('');
    // systemd could not spawn the process at all (systemd 257: "Failed to spawn executor"): the same.
    const unspawned = run({ EXIT_STATUS: '0', RESULT: 'resources' });
    expect(unspawned.outcome.unitsDown).toEqual([]);
    expect(unspawned.outcome.unitNotes).toEqual([
      "systemd could not start shop-scheduler.service's process (result: resources): starting it again",
    ]);
  } finally {
    execFileSync('rm', ['-rf', root]);
  }
});

test("a restart's own stop passes unremarked; a start held behind a run that keeps stopping gets its stop bound, once, and says so", () => {
  const root = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
  // systemd after `restart --no-block`: the old run stops for STOP_MS with the start job
  // queued, then the new run is active.
  const fake = [
    '#!/bin/bash',
    'case "$1" in',
    '  show)',
    `    since=$(cat ${root}/since); now=\${EPOCHREALTIME/[.,]/}`,
    '    if [ $(( (now - since) / 1000 )) -lt "$STOP_MS" ]; then printf "Job=7\\nActiveState=deactivating\\nSubState=stop-sigterm\\nMainPID=1\\n";',
    '    else case "$*" in *--value*) echo 0 ;; *) printf "Job=\\nActiveState=active\\nSubState=running\\nMainPID=$LIVE_PID\\n" ;; esac; fi ;;',
    '  list-jobs) echo "7 shop-scheduler.service restart running" ;;',
    'esac',
    '',
  ].join('\n');
  const run = (stopMs: number, timeout: number) => {
    execFileSync('bash', ['-c', `mkdir -p ${root}/bin && echo \${EPOCHREALTIME/[.,]/} > ${root}/since`]);
    return schedulerCheckWithFake(root, fake, timeout, { STOP_MS: String(stopMs) }).outcome;
  };
  try {
    const restart = run(300, 5);
    expect(restart.unitsDown).toEqual([]);
    expect(restart.unitNotes).toEqual([]);
    // Stopping for 2.5 s against a 1 s verify-timeout: the stop bound is added, and said.
    const held = run(2500, 1);
    expect(held.unitsDown).toEqual([]);
    expect(held.unitNotes).toEqual([
      'shop-scheduler.service: its earlier run is still stopping (finishing its work, up to 35 s) before it starts again',
    ]);
  } finally {
    execFileSync('rm', ['-rf', root]);
  }
});

test('the health check reports, the caller decides: its output reads as what it found', () => {
  const check = verifyStep({
    layout: shopLayout,
    path: '/h',
    timeout: 1,
    interval: 1,
    stableSeconds: 5,
    expectStatus: 200,
    expectBody: '',
    units: [],
  });
  const answer = { ok: false, attempts: 3, seconds: 2.1, status: 502, body: 'bad gateway' };
  expect(
    check.parse(
      `RESULT ${JSON.stringify(answer)}\nUNITS_DOWN a.service b.service\nUNIT_STATE a.service: is-active=failed jobs=none\nUNIT_NOTE a.service: waited\nJOURNAL one\nJOURNAL two\n`,
    ),
  ).toEqual({
    healthy: false,
    answer,
    unitsDown: ['a.service', 'b.service'],
    unitStates: ['a.service: is-active=failed jobs=none'],
    unitNotes: ['a.service: waited'],
    journal: ['one', 'two'],
    problem: '',
    nginx: null,
  });
  const good = JSON.stringify({ ...answer, ok: true, status: 200 });
  expect(check.parse(`RESULT ${good}\nPROBE_RC 0\n`).healthy).toBe(true);
  // The socket answers, nginx (another site for the name) does not: unhealthy.
  expect(
    check.parse(
      `RESULT ${good}\nPROBE_RC 0\nNGINX_HOST shop.example\nNGINX ${JSON.stringify(answer)}\nNGINX_RC 1\n`,
    ),
  ).toMatchObject({ healthy: false, nginx: { host: 'shop.example', answer } });
  expect(
    check.parse(`RESULT ${good}\nPROBE_RC 0\nNGINX_HOST shop.example\nNGINX ${good}\nNGINX_RC 0\n`).healthy,
  ).toBe(true);
  // Through nginx too, a probe that printed nothing fails.
  expect(
    check.parse(`RESULT ${good}\nPROBE_RC 0\nNGINX_HOST shop.example\nNGINX \nNGINX_RC 1\n`),
  ).toMatchObject({
    healthy: false,
    nginx: { answer: { ok: false, body: /no answer/ } },
  });
  // A probe that died (runuser or python failing) is a failed check, never a pass.
  for (const dead of [
    'RESULT \nPROBE_RC 1\n',
    'RESULT \n',
    '',
    'RESULT not json\nPROBE_RC 0\n',
    'RESULT null\n',
  ])
    expect(check.parse(dead)).toMatchObject({ healthy: false, answer: { ok: false, body: /no answer/ } });
  expect(check.parse(`RESULT ${good}\nPROBE_RC 2\n`).healthy).toBe(false);
  expect(check.parse('PROBLEM no api slot is serving on this host (nothing deployed yet?)\n')).toMatchObject({
    healthy: false,
    problem: 'no api slot is serving on this host (nothing deployed yet?)',
  });
});

test('units: hardened, the api a blue/green template on a Unix socket, worker present, scheduler absent here', () => {
  const api = units['shop-api@.service']!;
  expect(api).toContain(
    'ExecStart=/opt/shop/slots/%i/.venv/bin/python -m uvicorn main:app --uds /run/shop-api-%i/api.sock',
  );
  expect(api).toContain('$METALSHIP_UVICORN_FLAGS');
  for (const dir of [
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ReadWritePaths=/opt/shop/shared',
    'CapabilityBoundingSet=',
    'TimeoutStopSec=35',
    'KillMode=mixed',
  ]) {
    expect(api).toContain(dir);
  }
  expect(units['shop-worker@.service']).toContain(
    'ExecStart=/opt/shop/releases/%i/.venv/bin/python -m worker',
  );
  expect(units['shop-worker@.service']).toContain('WorkingDirectory=/opt/shop/releases/%i\n');
  expect(units['shop-scheduler.service']).toBeNull();
});

test('nginx proxies to the socket link, so a switch never reloads nginx', () => {
  expect(upstreamConf(shopLayout)).toContain('server unix:/opt/shop/run/api.sock');
  const site = siteConf(shopLayout, {
    serverName: 'shop.example.com',
    tls: { certificate: '/c.pem', key: '/k.pem' },
  });
  expect(site).toContain('return 301 https://$host$request_uri;');
  expect(site).toContain('listen 443 ssl http2;');
  expect(siteConf(shopLayout, { serverName: '_', tls: null })).toContain('listen 80 default_server;');
});

const listing: ReleaseListing = {
  releases: [
    {
      id: 'r1',
      status: 'ready',
      created: 1,
      venv: 'py-a',
      revision: '',
      schema_revision: '0001',
      served: true,
    },
    {
      id: 'r2',
      status: 'ready',
      created: 2,
      venv: 'py-a',
      revision: '',
      schema_revision: '0002',
      served: true,
    },
    { id: 'r3', status: 'failed', created: 3, venv: 'py-b', revision: '', schema_revision: '', served: true },
    { id: 'r4', status: 'bad', created: 4, venv: 'py-c', revision: '', schema_revision: '', served: true },
    { id: 'r5', status: 'ready', created: 5, venv: 'py-d', revision: '', schema_revision: '', served: true },
    { id: 'r6', status: 'building', created: 6, venv: '', revision: '', schema_revision: '', served: true },
    { id: 'r7', status: 'ready', created: 7, venv: 'py-d', revision: '', schema_revision: '', served: true },
  ],
  links: { current: 'r7', 'slots/blue': 'r5', 'slots/green': 'r7' },
  venvs: ['py-a', 'py-b', 'py-c', 'py-d', 'py-old'],
};

test('cleanup keeps N good releases plus current and the standby; failed ones never count', () => {
  expect(planCleanup(listing, 2)).toEqual({
    releases: ['r6', 'r4', 'r2', 'r1'],
    venvs: ['py-a', 'py-c', 'py-old'],
  });
  expect(planCleanup(listing, 4).releases).toEqual(['r6', 'r4']);
});

test('rollback goes to the newest good release before current, refuses bad and missing ones with the candidates', () => {
  expect(pickRollbackTarget(listing, '')).toEqual({ target: 'r5' });
  // A release only built (the fleet's <id>-migrate) never served: no way back, unless named.
  const built = {
    id: 'r6-migrate',
    status: 'ready',
    created: 6.5,
    venv: 'py-d',
    revision: '',
    schema_revision: '',
    served: false,
  };
  const fleet = { ...listing, releases: [...listing.releases, built] };
  expect(pickRollbackTarget(fleet, '')).toEqual({ target: 'r5' });
  expect(pickRollbackTarget(fleet, 'r6-migrate')).toEqual({ target: 'r6-migrate' });
  expect(pickRollbackTarget(listing, 'r1')).toEqual({ target: 'r1' });
  expect(pickRollbackTarget(listing, 'r4')).toEqual({
    error: 'release r4 is marked bad (rolled back from before); good releases: r5, r2, r1',
  });
  expect(pickRollbackTarget(listing, 'r3')).toEqual({
    error: 'release r3 is failed, not a complete release; good releases: r5, r2, r1',
  });
  expect(pickRollbackTarget(listing, 'nope')).toMatchObject({
    error: expect.stringContaining('does not exist'),
  });
  expect(pickRollbackTarget(listing, 'r7')).toMatchObject({
    error: expect.stringContaining('already current'),
  });
});

test('migration output is parsed from the marker lines', () => {
  const parseMigrateOutput = (stdout: string) => migrateStep(MIGRATE, 'migrating').parse(stdout);
  expect(
    parseMigrateOutput('REVISION_BEFORE 0001\nBACKUP /b/x.dump abc 123\nINFO noise\nREVISION_AFTER 0002\n'),
  ).toEqual({
    before: '0001',
    after: '0002',
    backupPath: '/b/x.dump',
    backupSha256: 'abc',
    backupBytes: 123,
    skipped: '',
  });
  expect(parseMigrateOutput('REVISION_BEFORE\nREVISION_AFTER 0001\n').before).toBe('');
});

test('no script names a fixed file in a world-writable directory: another user could have put a link there', () => {
  const fixed = Object.values(scripts)
    .flatMap((text) => text.split('\n'))
    // (the hostile test values name /tmp/pwned, as data)
    .filter((line) => !line.includes('/tmp/pwned'))
    .filter(
      (line) => /(^|[\s"'=>])\/(var\/)?tmp\/[A-Za-z0-9]/.test(line) && !/mktemp|-maxdepth 1 -name/.test(line),
    );
  expect(fixed).toEqual([]);
});

test("the lock script's lines read as events; a holder's text is shown, never taken for one", () => {
  expect(lockEvent('WAITING deploy by alice since 2026-01-01 (no run URL)')).toEqual({
    kind: 'waiting',
    holder: 'deploy by alice since 2026-01-01 (no run URL)',
  });
  expect(lockEvent('WAITING ')).toEqual({ kind: 'waiting', holder: '' });
  expect(lockEvent('STALE deploy by bob')).toEqual({ kind: 'stale', holder: 'deploy by bob' });
  expect(lockEvent('LOCKED')).toEqual({ kind: 'locked' });
  // The holder file is the host's: a holder named LOCKED waits all the same.
  expect(lockEvent('WAITING LOCKED')).toEqual({ kind: 'waiting', holder: 'LOCKED' });
  expect(lockEvent('LOCKED by someone')).toBeNull();
  expect(lockEvent('took the migration lock')).toBeNull();
});
