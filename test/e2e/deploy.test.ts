// The deploy path end to end on a real host, under a steady stream of requests:
// deploy v1, v2, a v3 that fails verification (rolled back by itself), a
// dispatched rollback to v1; then retention, the lock, and killed runs.
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  connectionInputs,
  e2eState,
  setUpAppOnHost,
  sampleAppCopy,
  onHost,
  outcome,
  runBundle,
  sampleAppInputs,
  type E2EState,
} from '../support/e2e.js';
import { debianRelease } from '../support/hosts.js';
import { startLoad } from '../support/load.js';

const APP = 'shop';
/** The worker of the release current points at (an instance per release), as a shell word. */
const WORKER = `"${APP}-worker@$(basename "$(readlink /opt/${APP}/current)").service"`;
let state: E2EState;
let source: string;
let host: E2EState['hosts'][0];

async function setVersion(version: string, flags: { failHealth?: boolean } = {}) {
  await writeFile(path.join(source, 'version.py'), `VERSION = "${version}"\n`);
  await rm(path.join(source, 'FAIL_HEALTH'), { force: true });
  if (flags.failHealth) await writeFile(path.join(source, 'FAIL_HEALTH'), '');
}

function inputs(extra: Record<string, string> = {}) {
  return {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs(APP, source),
    'expect-body': '{release}',
    ...extra,
  };
}

async function serving(): Promise<{ release: string; version: string }> {
  const res = await fetch(`http://${host.address}/version`);
  return (await res.json()) as { release: string; version: string };
}

/**
 * A deploy with one more file in the source (gone again after it), under a
 * light load that must see no failed request; without it when load is false.
 */
async function deployWithFile(
  file: string,
  text: string,
  extra: Record<string, string>,
  { load = true }: { load?: boolean } = {},
) {
  await writeFile(path.join(source, file), text);
  const traffic = load ? startLoad(`http://${host.address}/`, { workers: 2, pauseMs: 10 }) : null;
  try {
    return await runBundle('deploy', inputs(extra));
  } finally {
    await rm(path.join(source, file), { force: true });
    if (traffic) expect((await traffic.stop()).failures).toEqual({});
  }
}

async function releaseStatus(id: string): Promise<string> {
  return (await onHost(state, host, `cat /opt/${APP}/releases/${id}/.metalship/status`)).trim();
}

beforeAll(async () => {
  state = e2eState();
  host = state.hosts[0]!;
  source = await sampleAppCopy('shop');
  await setUpAppOnHost(state, host, APP, { redisDb: 0 });
});
afterAll(async () => {
  await rm(source, { recursive: true, force: true });
});

const ids: Record<string, string> = {};

test('v1, v2, a failing v3 rolled back by itself, and a rollback to v1: zero failed requests', async () => {
  await setVersion('v1');
  const first = await runBundle('deploy', inputs());
  expect(outcome(first)).toBe('succeeded');
  ids.v1 = first.outputs['release-id']!;
  expect(await serving()).toEqual({ release: ids.v1, version: 'v1' });

  const load = startLoad(`http://${host.address}/`, { workers: 4, pauseMs: 5 });
  try {
    await setVersion('v2');
    const second = await runBundle('deploy', inputs());
    expect(outcome(second)).toBe('succeeded');
    ids.v2 = second.outputs['release-id']!;
    expect(second.outputs['previous-release-id']).toBe(ids.v1);
    expect(second.outputs.healthy).toBe('true');
    expect(await serving()).toEqual({ release: ids.v2, version: 'v2' });

    await setVersion('v3', { failHealth: true });
    const units = `sha256sum /etc/systemd/system/${APP}-api@.service /etc/systemd/system/${APP}-worker@.service`;
    const unitsBefore = await onHost(state, host, units);
    // Other settings too: its unit files change, and must come back.
    const third = await runBundle(
      'deploy',
      inputs({
        'verify-path': '/version',
        'verify-timeout': '3',
        'uvicorn-args': '--log-level warning',
        // a worker it runs without: the serving release keeps its own
        'worker-command': '',
      }),
    );
    expect(third.code).toBe(1);
    ids.v3 = third.outputs['release-id']!;
    expect(third.outputs['rolled-back']).toBe('true');
    // Checked on its own slot's socket before the rename: it never served.
    expect(third.stdout).toMatch(
      new RegExp(`${ids.v3} failed verification before taking traffic: ${ids.v2} kept serving`),
    );
    expect(third.stdout).toMatch(/\/version answered 500/);
    expect(third.stdout).not.toMatch(/traffic moved to the/);
    expect(await onHost(state, host, units)).toBe(unitsBefore);
    expect((await onHost(state, host, `systemctl is-active ${WORKER} || true`)).trim()).toBe('active');
    expect(third.summary).toContain('**Why:**');
    expect(await serving()).toEqual({ release: ids.v2, version: 'v2' });
    expect(await releaseStatus(ids.v3)).toBe('bad');

    const back = await runBundle('rollback', { ...inputs(), 'release-id': ids.v1 });
    expect(outcome(back)).toBe('succeeded');
    expect(back.outputs['release-id']).toBe(ids.v1);
    expect(back.outputs['rolled-back-from']).toBe(ids.v2);
    expect(await serving()).toEqual({ release: ids.v1, version: 'v1' });
  } finally {
    const report = await load.stop();
    expect(report.requests).toBeGreaterThan(100);
    expect(report.failures).toEqual({});
    expect(report.failed).toBe(0);
  }
  // The rollback refuses a release marked bad, naming the candidates.
  const refused = await runBundle('rollback', { ...inputs(), 'release-id': ids.v3 });
  expect(refused.code).toBe(1);
  expect(refused.stdout).toContain(`release ${ids.v3} is marked bad`);
  expect(refused.stdout).toContain('good releases:');
});

test('the worker and exactly one scheduler run from the current release', async () => {
  const out = await onHost(
    state,
    host,
    `systemctl is-active ${WORKER} ${APP}-scheduler; readlink /proc/$(systemctl show -p MainPID --value ${WORKER})/cwd`,
  );
  expect(out).toBe(`active\nactive\n/opt/${APP}/releases/${ids.v1}\n`);
  // One worker: the other releases' stopped once their jobs were done.
  const workers = await onHost(
    state,
    host,
    `systemctl list-units --state=active --plain --no-legend '${APP}-worker@*.service'`,
  );
  expect(
    workers
      .trim()
      .split('\n')
      .map((l) => l.split(' ')[0]),
  ).toEqual([`${APP}-worker@${ids.v1}.service`]);
  // Each running sample scheduler registers itself in Redis and leaves on exit.
  const schedulers = await onHost(state, host, `redis-cli scard ${APP}:scheduler:running`);
  expect(schedulers.trim()).toBe('1');
});

test("a host from before worker instances (one worker unit, run from current): verify checks that unit, and the next deploy replaces it with the release's instance", async () => {
  const template = `/etc/systemd/system/${APP}-worker@.service`;
  const legacy = `/etc/systemd/system/${APP}-worker.service`;
  const wants = `/etc/systemd/system/${APP}.target.wants`;
  // What metalship wrote before: the same unit, from current; enabled, running; no instance.
  await onHost(
    state,
    host,
    `set -e; sed -e 's#/opt/${APP}/releases/%i#/opt/${APP}/current#g' -e 's/ (release %i)//' ${template} > ${legacy}; ` +
      `systemctl stop '${APP}-worker@*.service'; rm -f ${wants}/${APP}-worker@*.service; ` +
      `systemctl daemon-reload; systemctl enable --quiet --now ${APP}-worker.service`,
  );
  const verified = await runBundle('verify', {
    ...connectionInputs(state, [host]),
    app: APP,
    'units-stable-seconds': '1',
  });
  if (verified.code !== 0) process.stdout.write(verified.stdout);
  expect(outcome(verified)).toBe('succeeded');

  await setVersion('v-instances');
  const run = await runBundle('deploy', inputs());
  if (run.code !== 0) process.stdout.write(run.stdout);
  expect(outcome(run)).toBe('succeeded');
  const id = run.outputs['release-id']!;
  expect(
    await onHost(
      state,
      host,
      `test -e ${legacy} && echo FILE; systemctl is-active ${APP}-worker.service ${APP}-worker@${id}.service || true; ls ${wants} | grep worker`,
    ),
  ).toBe(`inactive\nactive\n${APP}-worker@${id}.service\n`);
  // One worker process in all: the old unit's stopped.
  expect((await onHost(state, host, `pgrep -u ${APP} -fc 'python -m worker' || true`)).trim()).toBe('1');
  ids.instances = id;
});

test('a release whose app cannot import never takes traffic: its start in the standby slot fails at once, and the serving release keeps serving', async () => {
  // A deploy imports nothing before the switch unless a migration runs: the
  // start of the release in the standby slot is the check.
  const before = await serving();
  await setVersion('v-unimportable');
  const r = await deployWithFile(
    'broken_app.py',
    'raise ImportError("metalship-e2e: this release cannot import")\n',
    { 'app-module': 'broken_app:app' },
  );
  expect(r.code).toBe(1);
  // Its unit file (another app-module) is back as the serving release's.
  expect(
    await onHost(state, host, `grep -c broken_app /etc/systemd/system/${APP}-api@.service || true`),
  ).toBe('0\n');
  // Failed as soon as the process exited, not at the end of ready-timeout (60 s).
  expect(r.stdout).toMatch(/did not become ready in the (blue|green) slot: its process exited/);
  expect(r.stdout).toContain('metalship-e2e: this release cannot import');
  expect(r.stdout).toContain('failed to switch');
  expect(await serving()).toEqual(before);
  expect(await releaseStatus(r.outputs['release-id']!)).toBe('bad');
});

// Active at first, never settled: a check that passes on "active" passes these
// releases. Busy for a second and a half (an app importing), or idle as long (a
// worker sleeping between attempts to reach its broker), then gone.
const CRASHING_WORKERS = {
  busy: ['import time', 'started = time.time()', 'while time.time() - started < 1.5:', '    pass'],
  idle: ['import time', 'time.sleep(1.5)'],
};

test.each(Object.keys(CRASHING_WORKERS) as (keyof typeof CRASHING_WORKERS)[])(
  'a release whose worker crashes as it starts (%s first) is switched back: the deploy fails naming the worker, and the serving release keeps its own',
  async (kind) => {
    const before = await serving();
    await setVersion(`v-crashing-worker-${kind}`);
    const unit = `/etc/systemd/system/${APP}-worker@.service`;
    const unitBefore = await onHost(state, host, `sha256sum ${unit}`);
    const r = await deployWithFile(
      'crashing_worker.py',
      [...CRASHING_WORKERS[kind], 'raise SystemExit("metalship-e2e: this worker cannot start")', ''].join(
        '\n',
      ),
      { 'worker-command': 'python crashing_worker.py' },
    );
    expect(r.code).toBe(1);
    expect(r.outputs['rolled-back']).toBe('true');
    expect(r.stdout).toMatch(
      new RegExp(
        `${APP}-worker@[0-9_]+\\.service: its process exited (while it was checked|after the restart)`,
      ),
    );
    expect(r.stdout).toContain('metalship-e2e: this worker cannot start');
    expect(await serving()).toEqual(before);
    expect(await onHost(state, host, `sha256sum ${unit}`)).toBe(unitBefore);
    const worker = await onHost(
      state,
      host,
      `systemctl is-active ${WORKER}; readlink /proc/$(systemctl show -p MainPID --value ${WORKER})/cwd`,
    );
    expect(worker).toBe(`active\n/opt/${APP}/releases/${before.release}\n`);
    expect(await releaseStatus(r.outputs['release-id']!)).toBe('bad');
  },
);

test('a scheduler that crashes once as it starts, while the worker is still being waited for, fails the deploy: each unit is watched on its own', async () => {
  const before = await serving();
  await setVersion('v-scheduler-crashing-once');
  // Crashes on its first start in this release only; systemd's restart (5 s later) then runs.
  // The worker's check lasts past the scheduler's restart.
  const r = await deployWithFile(
    'once_scheduler.py',
    [
      'import os, sys, time',
      'marker = "/opt/shop/shared/metalship-e2e-once-" + os.path.basename(os.getcwd())',
      'if not os.path.exists(marker):',
      '    open(marker, "w").close()',
      '    time.sleep(0.3)',
      '    sys.exit("metalship-e2e: the scheduler crashes once")',
      'while True:',
      '    time.sleep(1)',
      '',
    ].join('\n'),
    { 'scheduler-command': 'python once_scheduler.py', 'units-stable-seconds': '7' },
    { load: false },
  );
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(new RegExp(`${APP}-scheduler\\.service: its process exited`));
  expect(r.stdout).toContain('metalship-e2e: the scheduler crashes once');
  expect(await serving()).toEqual(before);
});

test('checks longer than command-timeout still decide once traffic moved: a scheduler that exits during them is switched back', async () => {
  const before = await serving();
  await setVersion('v-checks-past-command-timeout');
  // The switch and its checks (up to units-stable-seconds) outlast the 6 s command-timeout.
  const r = await deployWithFile(
    'late_exit_scheduler.py',
    'import sys, time\ntime.sleep(8)\nsys.exit("metalship-e2e: the scheduler exits late")\n',
    {
      'scheduler-command': 'python late_exit_scheduler.py',
      'units-stable-seconds': '10',
      'command-timeout': '6',
    },
    { load: false },
  );
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/failed verification and was rolled back to /);
  expect(r.stdout).toMatch(new RegExp(`${APP}-scheduler\\.service: its process exited`));
  expect(await serving()).toEqual(before);
});

/**
 * Kills the switch's script on the host (its whole session: the newest on the
 * host) once the run says traffic moved; `killed` resolves when it is done.
 */
function killSwitchAfterMove(): { onOutput: (out: string) => void; killed: () => Promise<unknown> } {
  let killing: Promise<string> | null = null;
  return {
    onOutput: (out) => {
      if (!killing && out.includes('MARK traffic moved'))
        killing = onHost(
          state,
          host,
          'f=$(ls -t /run/metalship-sessions/* | head -n 1); pkill -KILL -s "$(cat "$f")"',
        );
    },
    killed: async () => killing,
  };
}

test('a switch whose script dies after traffic moved (killed during its checks) is switched back', async () => {
  const before = await serving();
  await setVersion('v-switch-killed-after-move');
  await writeFile(path.join(source, 'steady_scheduler.py'), 'import time\nwhile True:\n    time.sleep(1)\n');
  try {
    const kill = killSwitchAfterMove();
    const r = await runBundle(
      'deploy',
      inputs({ 'scheduler-command': 'python steady_scheduler.py', 'units-stable-seconds': '20' }),
      { onOutput: kill.onOutput },
    );
    expect(await kill.killed()).toBeDefined();
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/\(after traffic moved to \S+\)/);
    expect(r.stdout).toMatch(new RegExp(`and was rolled back to ${before.release} on ${host.address}`));
    expect(await serving()).toEqual(before);
  } finally {
    await rm(path.join(source, 'steady_scheduler.py'), { force: true });
  }
});

test('a rollback whose switch dies after traffic moved goes back, and its target stays a good release to roll back to', async () => {
  await setVersion('v-rollback-a');
  const a = await runBundle('deploy', inputs());
  expect(outcome(a)).toBe('succeeded');
  await setVersion('v-rollback-b');
  const b = await runBundle('deploy', inputs());
  expect(outcome(b)).toBe('succeeded');
  const before = await serving();
  const [ida, idb] = [a.outputs['release-id']!, b.outputs['release-id']!];
  const kill = killSwitchAfterMove();
  const r = await runBundle('rollback', inputs({ 'units-stable-seconds': '20' }), {
    onOutput: kill.onOutput,
  });
  expect(await kill.killed()).toBeDefined();
  expect(r.code).toBe(1);
  expect(r.stdout).toContain(`rolling back to ${ida} failed; the hosts are back on ${idb}`);
  expect(await serving()).toEqual(before);
  expect(await releaseStatus(ida)).toBe('ready');
  const again = await runBundle('rollback', inputs());
  expect(outcome(again)).toBe('succeeded');
  expect(again.outputs['release-id']).toBe(ida);
});

test("verify waits for a worker just restarted to stay up units-stable-seconds, beyond a shorter verify-timeout, and reads its age right where the container's /proc/uptime is its own", async () => {
  // As lxcfs does: an uptime of half the kernel's, which a process's start time is not counted in.
  await onHost(
    state,
    host,
    `awk '{ printf "%.2f %.2f\\n", $1 / 2, $2 / 2 }' /proc/uptime > /run/fake-uptime && mount --bind /run/fake-uptime /proc/uptime && systemctl restart ${WORKER}`,
  );
  let r;
  try {
    r = await runBundle('verify', {
      ...connectionInputs(state, [host]),
      app: APP,
      'worker-command': 'python -m worker',
      'scheduler-command': 'python -m scheduler',
      'verify-timeout': '1',
      'units-stable-seconds': '3',
    });
  } finally {
    await onHost(state, host, 'umount /proc/uptime; rm -f /run/fake-uptime');
  }
  if (r.code !== 0) process.stdout.write(r.stdout);
  expect(outcome(r)).toBe('succeeded');
  // It waited: the worker has run the 3 s by the time verify is done.
  const age = await onHost(state, host, `ps -o etimes= -p $(systemctl show -p MainPID --value ${WORKER})`);
  expect(Number(age)).toBeGreaterThanOrEqual(3);
});

test('units-ready: notify: the worker and the scheduler count as started when they say so, with no time window; a worker that never says so fails the deploy, and the release before serves on with its own', async () => {
  const unitType = () =>
    onHost(
      state,
      host,
      `for u in ${WORKER} ${APP}-scheduler; do systemctl show -p Type --value $u; done; systemctl is-active ${WORKER} ${APP}-scheduler`,
    );
  // The sample's worker and scheduler send READY=1 once they reach Redis (ready.py).
  await setVersion('v-notify');
  const ready = await runBundle('deploy', inputs({ 'units-ready': 'notify', 'units-stable-seconds': '120' }));
  if (ready.code !== 0) process.stdout.write(ready.stdout);
  expect(outcome(ready)).toBe('succeeded');
  expect(await unitType()).toBe('notify\nnotify\nactive\nactive\n');
  // Had the check waited for the 120 s window, the worker would be that old by now.
  const age = await onHost(state, host, `ps -o etimes= -p $(systemctl show -p MainPID --value ${WORKER})`);
  expect(Number(age)).toBeLessThan(120);
  const before = await serving();

  // Runs, never sends READY=1: systemd keeps it starting, and the deploy does not pass it.
  await setVersion('v-never-ready');
  const silent = await deployWithFile(
    'silent_worker.py',
    ['import time', 'while True:', '    time.sleep(1)', ''].join('\n'),
    { 'units-ready': 'notify', 'worker-command': 'python silent_worker.py', 'verify-timeout': '3' },
  );
  expect(silent.code).toBe(1);
  expect(silent.outputs['rolled-back']).toBe('true');
  expect(silent.stdout).toMatch(new RegExp(`${APP}-worker@[0-9_]+\\.service: not ready \\(.*READY=1`));
  expect(await serving()).toEqual(before);
  // The switch back restarts them without waiting for their signal: they come up on their own.
  await onHost(
    state,
    host,
    `for i in $(seq 1 300); do systemctl is-active -q ${WORKER} && systemctl is-active -q ${APP}-scheduler && exit 0; sleep 0.1; done; exit 1`,
  );
  expect(await unitType()).toBe('notify\nnotify\nactive\nactive\n');
  expect(await onHost(state, host, `readlink /proc/$(systemctl show -p MainPID --value ${WORKER})/cwd`)).toBe(
    `/opt/${APP}/releases/${before.release}\n`,
  );

  // The verify action alone, not right after a restart: active alone is not enough,
  // the worker's process (restarted by the switch back) must have run the window too.
  const verified = await runBundle('verify', {
    ...connectionInputs(state, [host]),
    app: APP,
    'units-stable-seconds': '2',
  });
  expect(outcome(verified)).toBe('succeeded');
  const settledAge = await onHost(
    state,
    host,
    `ps -o etimes= -p $(systemctl show -p MainPID --value ${WORKER})`,
  );
  expect(Number(settledAge)).toBeGreaterThanOrEqual(2);

  // Back to the default: plain units again.
  await setVersion('v-stable');
  const stable = await runBundle('deploy', inputs());
  expect(outcome(stable)).toBe('succeeded');
  expect(await unitType()).toBe('simple\nsimple\nactive\nactive\n');
});

test('a deploy that mends a worker caught in a crash loop succeeds: the restarts before it are not counted as its own', async () => {
  // A release whose worker exits at once, made current by the switch action alone (no checks).
  await setVersion('v-crash-loop');
  await writeFile(path.join(source, 'loop_worker.py'), 'import sys\nsys.exit("metalship-e2e: crash loop")\n');
  let id: string;
  try {
    const made = await runBundle('release', inputs({ 'worker-command': 'python loop_worker.py' }));
    expect(outcome(made)).toBe('succeeded');
    id = made.outputs['release-id']!;
  } finally {
    await rm(path.join(source, 'loop_worker.py'), { force: true });
  }
  const sw = await runBundle('switch', { ...connectionInputs(state, [host]), app: APP, 'release-id': id });
  expect(outcome(sw)).toBe('succeeded');
  // systemd restarts it (RestartSec=5) and counts each restart.
  await onHost(
    state,
    host,
    `for i in $(seq 1 300); do [ "$(systemctl show -p NRestarts --value ${WORKER})" -ge 1 ] && exit 0; sleep 0.1; done; exit 1`,
  );
  await setVersion('v-mended');
  const mended = await runBundle('deploy', inputs());
  if (mended.code !== 0) process.stdout.write(mended.stdout);
  expect(outcome(mended)).toBe('succeeded');
  expect(await serving()).toEqual({ release: mended.outputs['release-id'], version: 'v-mended' });
  expect(await onHost(state, host, `systemctl show -p NRestarts --value ${WORKER}`)).toBe('0\n');
});

test("the api starts through the app's real lifespan and stops gracefully where the host's FastAPI and uvicorn have them", async () => {
  // Debian 13's FastAPI 0.115 takes lifespan= (0.93+) and its uvicorn 0.32 has
  // --timeout-graceful-shutdown (0.21+); Debian 11's and 12's have neither.
  const modern = debianRelease() === 'trixie';
  const res = await fetch(`http://${host.address}/startup`);
  expect(await res.json()).toEqual({ hook: modern ? 'lifespan' : 'on_event' });
  const args = await onHost(
    state,
    host,
    `for u in $(systemctl list-units --state=active --plain --no-legend '${APP}-api@*' | cut -d' ' -f1); do ps -o args= -p "$(systemctl show -p MainPID --value "$u")"; done`,
  );
  expect(args).toMatch(/uvicorn/);
  if (modern) expect(args).toContain('--timeout-graceful-shutdown 30');
  else expect(args).not.toContain('--timeout-graceful-shutdown');
});

test('six more deploys leave five good releases and current intact', async () => {
  let last = '';
  for (let i = 4; i <= 9; i++) {
    await setVersion(`v${i}`);
    const r = await runBundle('deploy', inputs());
    expect(outcome(r)).toBe('succeeded');
    last = r.outputs['release-id']!;
  }
  const statuses = await onHost(state, host, `cat /opt/${APP}/releases/*/.metalship/status | sort | uniq -c`);
  expect(statuses.trim()).toBe('5 ready');
  expect((await onHost(state, host, `readlink /opt/${APP}/current`)).trim()).toBe(
    `/opt/${APP}/releases/${last}`,
  );
  expect(await serving()).toEqual({ release: last, version: 'v9' });
  // Only the virtualenvs still used remain.
  expect((await onHost(state, host, `ls /opt/${APP}/venvs | wc -l`)).trim()).toBe('1');
});

test('two deploys at once: the second waits, then fails naming the holder; nothing is corrupted', async () => {
  await setVersion('v10');
  let lockTaken: () => void = () => {};
  const taken = new Promise<void>((r) => (lockTaken = r));
  // The release group starts only once the lock is held.
  const a = runBundle('deploy', inputs(), {
    onOutput: (out) => out.includes('::group::Release') && lockTaken(),
  });
  await taken;
  const b = await runBundle('deploy', inputs({ 'lock-timeout': '0' }));
  const ra = await a;
  expect(outcome(ra)).toBe('succeeded');
  expect(b.code).toBe(1);
  expect(b.stdout).toMatch(/another deploy holds the lock of shop .*deploy by e2e-tester since/);
  expect(await serving()).toEqual({ release: ra.outputs['release-id'], version: 'v10' });
});

/** Starts a deploy and kills it (SIGKILL, like a cancelled runner) when its output matches. */
async function killedDeploy(marker: RegExp): Promise<void> {
  await runBundle('deploy', inputs(), {
    env: { GITHUB_ACTOR: 'killed-run' },
    onOutput: (out, kill) => marker.test(out) && kill(),
  });
}

test.each([
  ['upload', /::group::Release/],
  ['switch', /starting \S+ in the (blue|green) slot/],
])('a run killed during %s leaves a release serving, and a re-run succeeds', async (_phase, marker) => {
  const load = startLoad(`http://${host.address}/`, { workers: 2, pauseMs: 10 });
  await setVersion(`killed-${_phase}`);
  await killedDeploy(marker);
  // Whatever answers is a complete release: the one before, or the new one if the kill came after traffic moved.
  const during = await serving();
  expect(
    (await onHost(state, host, `cat /opt/${APP}/releases/${during.release}/.metalship/status`)).trim(),
  ).toBe('ready');
  expect((await onHost(state, host, `cat /opt/${APP}/current/.metalship/status`)).trim()).toBe('ready');
  const rerun = await runBundle('deploy', inputs());
  expect(outcome(rerun)).toBe('succeeded');
  expect(await serving()).toEqual({ release: rerun.outputs['release-id'], version: `killed-${_phase}` });
  const report = await load.stop();
  expect(report.failed).toBe(0);
});

test('a deploy warns when the backups beside it were never proven to restore, and stops warning once they are', async () => {
  await onHost(state, host, `mkdir -p /var/backups/metalship/${APP}`);
  const warned = await runBundle('deploy', inputs());
  expect(outcome(warned)).toBe('succeeded');
  expect(warned.stdout).toMatch(/::warning::.*no restore test of the backups is recorded on this host/);
  expect(warned.summary).toContain('no restore test of the backups is recorded');
  // What backup-verify records after a successful restore test.
  await onHost(
    state,
    host,
    `printf '{"verified":"%s"}' "$(date -u +%FT%TZ)" > /var/backups/metalship/${APP}/.last-verified.json`,
  );
  const quiet = await runBundle('deploy', inputs());
  expect(outcome(quiet)).toBe('succeeded');
  expect(quiet.stdout).not.toMatch(/restore test|proven to restore/);
  await onHost(state, host, `rm -rf /var/backups/metalship/${APP}`);
});
