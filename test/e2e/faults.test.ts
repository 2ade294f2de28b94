// Faults during a deploy on real hosts. For every phase of a deploy (upload,
// dependency install, migrate, switch, verify, cleanup) the run is killed and,
// separately, the host's network is cut, at a log line of that phase and, where
// the phase has a process of its own on the host, once that process is seen
// running; during the dependency install and the switch the host also reboots.
// Afterwards a complete release serves, the lock is free within its stale-lock
// rule with nothing of the faulty run left running, and a re-run succeeds.
// Also: a migration that hangs silently, a disk that fills up.
//
// A network cut lasts 40 s (the client's keepalive gives up after 30 to 40 s,
// the remote lock holder after 30 s without a heartbeat), so the phases run in
// three lanes at once, each lane its own host and app; every phase is still its
// own test with its own checks.
import { execFile } from 'node:child_process';
import { readFile, rm, writeFile, appendFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { sshRun } from '../support/hosts.js';
import {
  connectionInputs,
  e2eState,
  httpGet,
  onHost,
  outcome,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  setUpAppOnHost,
  type E2EState,
} from '../support/e2e.js';
import { setTimeout as sleep } from 'node:timers/promises';

const run = promisify(execFile);
const CUT_SECONDS = 40;

type Host = E2EState['hosts'][0];
interface Lane {
  host: Host;
  app: string;
  serverName: string;
  source: string;
  version: number;
}

let state: E2EState;
let lanes: Lane[] = [];

function inputs(lane: Lane, extra: Record<string, string> = {}) {
  return {
    ...connectionInputs(state, [lane.host]),
    ...sampleAppInputs(lane.app, lane.source),
    'server-name': lane.serverName,
    'lock-timeout': '90',
    ...extra,
  };
}

async function serving(lane: Lane): Promise<{ release: string; version: string }> {
  return JSON.parse((await httpGet(lane.host.address, '/version', lane.serverName)).body) as {
    release: string;
    version: string;
  };
}

async function nextVersion(lane: Lane): Promise<string> {
  lane.version++;
  const v = `${lane.app}-${lane.version}`;
  await writeFile(path.join(lane.source, 'version.py'), `VERSION = "${v}"\n`);
  // A migration whose files changed runs (unchanged ones are skipped): each version's does.
  await writeFile(path.join(lane.source, 'slow_migrate.py'), `${SLOW_MIGRATE}# ${v}\n`);
  return v;
}

/** The release that answers is complete, and current points at a complete release. */
async function expectCompleteReleaseServing(lane: Lane): Promise<void> {
  const now = await serving(lane);
  const root = `/opt/${lane.app}`;
  expect(
    (await onHost(state, lane.host, `cat ${root}/releases/${now.release}/.metalship/status`)).trim(),
  ).toBe('ready');
  expect((await onHost(state, lane.host, `cat ${root}/current/.metalship/status`)).trim()).toBe('ready');
  expect((await onHost(state, lane.host, `readlink -f ${root}/current`)).trim()).toBe(
    `${root}/releases/${now.release}`,
  );
}

/**
 * The command lines of the host's processes, read on this machine through the
 * host's network namespace (so this works while its link is cut).
 */
async function hostProcesses(host: Host): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'pids', host.name]);
  const cmds = await Promise.all(
    stdout
      .split('\n')
      .filter(Boolean)
      .map((pid) =>
        readFile(`/proc/${pid}/cmdline`, 'utf8').then(
          (c) => c.replaceAll('\0', ' ').trim(),
          () => '',
        ),
      ),
  );
  return cmds.filter(Boolean);
}

async function waitForProcess(
  host: Host,
  probe: (cmd: string) => boolean,
  ms: number,
): Promise<string | null> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const hit = (await hostProcesses(host)).find(probe);
    if (hit) return hit;
    await sleep(40);
  }
  return null;
}

/** kill: the run (SIGKILL, like a cancelled runner); cut: the host's link, for 40 s; reboot: the host. */
type Fault = 'kill' | 'cut' | 'reboot';

interface Phase {
  name: string;
  /** The lane (host and app) it runs in. */
  lane: number;
  faults: Fault[];
  /** A log line printed when the phase begins. */
  marker: RegExp;
  /** A process on the host that runs only during the phase: the fault waits until it is seen. */
  probe?: (app: string) => (cmd: string) => boolean;
  inputs?: Record<string, string>;
  /** The run survives a network cut here: the release is live and verified, the lost cleanup only warns. */
  cutWarnsOnly?: boolean;
  /** Before each faulty run. */
  prepare?: (lane: Lane) => Promise<void>;
  /** After the phase's cases. */
  finish?: (lane: Lane) => Promise<void>;
}

// Prints for 4 s, then migrates: long enough for a fault to land inside it.
const SLOW_MIGRATE = `import subprocess, sys, time
for i in range(10):
    print("migrating, step %d" % i, flush=True)
    time.sleep(0.4)
sys.exit(subprocess.call([sys.executable, "-m", "dbmigrate", "upgrade", "head"]))
`;

const SLOW_START = 'import time\ntime.sleep(4)  # a slow start, for a fault to land in the switch\n';

const PHASES: Phase[] = [
  // Killed runs in these two phases: deploy.test.ts, under load.
  { name: 'upload', lane: 0, faults: ['cut'], marker: /::group::Release/ },
  {
    name: 'dependency install',
    lane: 1,
    faults: ['kill', 'cut', 'reboot'],
    marker: /building virtualenv/,
    probe: (app) => (cmd) =>
      cmd.includes(`/opt/${app}/venvs/`) &&
      /(^|\s)(-I?m (venv|pip|ensurepip)|\S+\/\.pip-runner\/\S+\/pip install)(\s|$)/.test(cmd),
    // New requirements, so a new virtualenv is built.
    prepare: async (lane) =>
      appendFile(path.join(lane.source, 'requirements.txt'), `# fault run ${lane.version}\n`),
  },
  {
    name: 'migrate',
    lane: 2,
    faults: ['kill', 'cut'],
    marker: /running: .*slow_migrate\.py/,
    probe: () => (cmd) => cmd.includes('slow_migrate.py'),
    inputs: { migrate: 'true', 'migrate-command': 'python slow_migrate.py', 'migrate-backup': 'false' },
  },
  {
    name: 'switch',
    lane: 0,
    faults: ['cut', 'reboot'],
    marker: /starting \S+ in the (blue|green) slot/,
    // The switch waiting for the new slot to be ready: a release that takes 4 s to start.
    probe: (app) => (cmd) => cmd.includes('wait-ready') && cmd.includes(`/run/${app}-api-`),
    prepare: async (lane) => {
      const main = path.join(lane.source, 'main.py');
      const text = await readFile(main, 'utf8');
      if (!text.startsWith(SLOW_START)) await writeFile(main, SLOW_START + text);
    },
    finish: async (lane) => {
      const main = path.join(lane.source, 'main.py');
      await writeFile(main, (await readFile(main, 'utf8')).replace(SLOW_START, ''));
    },
  },
  {
    name: 'verify',
    lane: 1,
    faults: ['kill', 'cut'],
    // The checks after traffic moved, in the switch's own script.
    marker: /MARK traffic moved to the (blue|green) slot/,
    probe: () => (cmd) => cmd.includes('wait-ready') && cmd.includes('/slow?seconds=4'),
    inputs: { 'verify-path': '/slow?seconds=4' },
  },
  {
    name: 'cleanup',
    lane: 2,
    faults: ['kill', 'cut'],
    marker: /healthy after/,
    probe: (app) => (cmd) => cmd.includes(`rm -rf -- /opt/${app}/releases/1999`),
    inputs: { 'keep-releases': '2' },
    cutWarnsOnly: true,
    // Old releases with many files, for the cleanup to take a while removing
    // (a line per directory: on a busy machine it is slow, never silent; on a
    // quiet one, 180,000 files still take long enough for the fault to land).
    prepare: async (lane) =>
      void (await onHost(
        state,
        lane.host,
        `cd /opt/${lane.app}/releases && for n in 1 2 3; do d=19990101_00000$n; mkdir -p $d/.metalship && echo ready > $d/.metalship/status && echo '{"created_epoch": '$n'}' > $d/.metalship/release.json && (cd $d && python3 -c 'import os
for d in range(60):
    os.makedirs("f%d" % d, exist_ok=True)
    for i in range(1000): open("f%d/%d" % (d, i), "w").close()
    print(d, flush=True)'); done`,
      )),
  },
];

interface FaultyRun {
  code: number;
  out: string;
  /** What the fault waited for on the host (the process's command line), or 'marker'. */
  hit: string | null;
  /** Whether the phase's log line was seen (null hit: then its process was not). */
  marker: boolean;
}

const bootId = async (host: Host) =>
  (await onHost(state, host, 'cat /proc/sys/kernel/random/boot_id')).trim();

/**
 * Waits until the host has booted again (another boot id), systemd says it is
 * up, and the app answers through nginx again (its api starts at boot).
 */
async function backAfterReboot(lane: Lane, before: string): Promise<void> {
  const deadline = Date.now() + 120000;
  let step = 'did not boot again';
  while (Date.now() < deadline) {
    const r = await sshRun(
      lane.host,
      state.key,
      `cat /proc/sys/kernel/random/boot_id; systemctl is-system-running --wait; curl -s -o /dev/null -w '%{http_code}\\n' -H 'Host: ${lane.serverName}' http://127.0.0.1/version`,
      { idleMs: 30000 },
    );
    const [id, status, http] = r.stdout.trim().split('\n');
    if (id && id !== before) {
      step = `booted again (${status}), but ${lane.app} did not serve again (${http})`;
      if ((status === 'running' || status === 'degraded') && http === '200') return;
    }
    await sleep(500);
  }
  throw new Error(`${lane.host.name} ${step}`);
}

/** A deploy that is killed, or whose host loses its network for 40 s, or reboots, once the phase is under way. */
async function faultyDeploy(lane: Lane, phase: Phase, fault: Fault): Promise<FaultyRun> {
  const link = `${lane.host.name}-h`;
  let fired: Promise<string | null> | null = null;
  let restored: Promise<void> = Promise.resolve();
  const booted = fault === 'reboot' ? await bootId(lane.host) : '';
  const r = await runBundle('deploy', inputs(lane, phase.inputs), {
    env: { GITHUB_ACTOR: `${fault}-run` },
    onOutput: (out, kill) => {
      if (fired || !phase.marker.test(out)) return;
      fired = (async () => {
        const hit = phase.probe ? await waitForProcess(lane.host, phase.probe(lane.app), 60000) : 'marker';
        if (fault === 'kill') kill();
        else if (fault === 'reboot') {
          // The test harness boots a host again when it reboots (testhosts.sh's supervisor).
          await sshRun(lane.host, state.key, 'systemctl reboot', { idleMs: 10000 });
          restored = backAfterReboot(lane, booted);
        } else {
          await run('ip', ['link', 'set', link, 'down']);
          restored = sleep(CUT_SECONDS * 1000).then(async () => {
            await run('ip', ['link', 'set', link, 'up']);
          });
        }
        return hit;
      })();
    },
  });
  const hit = fired ? await fired : null;
  await restored;
  return { code: r.code, out: r.stdout, hit, marker: fired !== null };
}

/** Waits until the app's deploy lock can be taken (and is let go again at once). */
async function lockFreeWithin(lane: Lane, seconds: number): Promise<boolean> {
  const out = await onHost(
    state,
    lane.host,
    `flock -w ${seconds} /opt/${lane.app}/.metalship/deploy.lock true && echo free || echo held`,
  );
  return out.trim() === 'free';
}

async function phaseCase(lane: Lane, phase: Phase): Promise<void> {
  for (const fault of phase.faults) {
    const what = `${fault} during ${phase.name}`;
    const want = await nextVersion(lane);
    await phase.prepare?.(lane);
    const r = await faultyDeploy(lane, phase, fault);
    // The fault landed in the phase, and the run did not succeed (or, after the
    // switch and verification, only warns).
    expect({ what, hit: r.hit, marker: r.marker }).toEqual({ what, hit: expect.any(String), marker: true });
    if (fault === 'cut' && phase.cutWarnsOnly) {
      expect({ what, code: r.code }).toEqual({ what, code: 0 });
      expect(r.out).toMatch(/::warning::cleanup on \S+ failed: .*(Keepalive|connection)/i);
    } else {
      expect({ what, failed: r.code !== 0 }).toEqual({ what, failed: true });
      // A cut ends the connection; a reboot may end it, or stop the host's
      // systemd first (a transient unit then fails as the bus goes away).
      if (fault === 'cut') expect(r.out).toMatch(/connection|Keepalive|ended without an exit code/i);
      if (fault === 'reboot')
        expect(r.out).toMatch(
          /connection|Keepalive|ended without an exit code|message bus|Transport endpoint is not connected|shutting down/i,
        );
    }
    await expectCompleteReleaseServing(lane);
    // The lock: let go at once when the run is killed (its connection closed),
    // within the 30 s heartbeat rule when the network went (over by now), held
    // by nobody after a reboot.
    expect({ what, lockFree: await lockFreeWithin(lane, fault === 'kill' ? 5 : 0) }).toEqual({
      what,
      lockFree: true,
    });
    // Nothing of the faulty run still works on the host once the lock is free.
    if (phase.probe)
      expect({ what, leftovers: (await hostProcesses(lane.host)).filter(phase.probe(lane.app)) }).toEqual({
        what,
        leftovers: [],
      });
    const rerun = await runBundle('deploy', inputs(lane, { ...phase.inputs, 'lock-timeout': '5' }));
    expect({ what, code: rerun.code, out: rerun.code ? rerun.stdout : '' }).toEqual({
      what,
      code: 0,
      out: '',
    });
    // A killed or cut-off run cannot release its lock: the re-run finds it stale.
    // A reboot may let the run fail, and release, before the connection goes
    // (a build unit stopped by the shutdown ends the step at once).
    const stale = /recovered a stale deploy lock left by a run that ended without releasing it/;
    if (fault !== 'reboot') expect({ what, stale: stale.test(rerun.stdout) }).toEqual({ what, stale: true });
    expect(await serving(lane)).toEqual({ release: rerun.outputs['release-id'], version: want });
  }
  await phase.finish?.(lane);
}

interface LaneWork {
  name: string;
  lane: number;
  fn: (lane: Lane) => Promise<void>;
  done?: Promise<void>;
}
const queued: LaneWork[] = [];

/**
 * A test whose work runs in a lane: each lane runs its tests in order, side by
 * side with the other lanes, from the moment the lanes are set up. The test
 * waits for its work and fails with its failure.
 */
function laneTest(name: string, lane: number, fn: (lane: Lane) => Promise<void>): void {
  const work: LaneWork = { name, lane, fn };
  queued.push(work);
  test(name, async () => {
    if (!work.done) throw new Error('the lanes were not set up');
    await work.done;
  });
}

beforeAll(async () => {
  state = e2eState();
  const hosts = [state.hosts[1]!, state.hosts[2]!, state.hosts[0]!];
  const t0 = Date.now();
  lanes = await Promise.all(
    ['faulty', 'faultyb', 'faultyc'].map(async (app, i) => {
      const lane: Lane = {
        host: hosts[i]!,
        app,
        serverName: `${app}.test`,
        source: await sampleAppCopy(app),
        version: 0,
      };
      await setUpAppOnHost(state, lane.host, app, { redisDb: 2 + i, dbPassword: `${app}-pw` });
      await nextVersion(lane);
      const first = await runBundle('deploy', inputs(lane));
      expect(outcome(first)).toBe('succeeded');
      return lane;
    }),
  );
  process.stdout.write(`lanes set up: ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  const chains = lanes.map(() => Promise.resolve());
  for (const work of queued) {
    work.done = chains[work.lane]!.then(async () => {
      const t0 = Date.now();
      try {
        await work.fn(lanes[work.lane]!);
      } finally {
        process.stdout.write(`lane ${work.lane}: ${work.name}: ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
      }
    });
    work.done.catch(() => undefined); // awaited by its test
    chains[work.lane] = work.done.catch(() => undefined);
  }
});
afterAll(async () => {
  await Promise.allSettled(queued.map((w) => w.done));
  for (const lane of lanes) {
    await run('ip', ['link', 'set', `${lane.host.name}-h`, 'up']).catch(() => undefined);
    await rm(lane.source, { recursive: true, force: true });
  }
});

for (const phase of PHASES)
  laneTest(
    `during ${phase.name} (${phase.faults.join(', ').replace(/, (?=[a-z]+$)/, ' and ')}): a complete release serves, the lock is free with nothing left running, a re-run succeeds`,
    phase.lane,
    (lane) => phaseCase(lane, phase),
  );

laneTest(
  'a migration that hangs silently hits the idle timeout; the previous release keeps serving',
  0,
  async (main) => {
    const before = await serving(main);
    await writeFile(path.join(main.source, 'hang.py'), 'import time\ntime.sleep(120)\n');
    await nextVersion(main);
    const r = await runBundle(
      'deploy',
      inputs(main, {
        migrate: 'true',
        'migrate-command': 'python hang.py',
        'migrate-backup': 'false',
        'command-idle-timeout': '5',
        'revision-command': 'true',
      }),
    );
    await rm(path.join(main.source, 'hang.py'));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/printed nothing for 5 s \(idle timeout\); its processes were stopped/);
    expect(await serving(main)).toEqual(before);
    expect(
      (
        await onHost(
          state,
          main.host,
          `cat /opt/${main.app}/releases/${r.outputs['release-id']}/.metalship/status`,
        )
      ).trim(),
    ).toBe('failed');
    expect(await onHost(state, main.host, "pgrep -f 'python han[g].py' || echo none")).toBe('none\n');
  },
);

laneTest(
  'a full disk during the upload fails the run cleanly; after space is freed a re-run succeeds',
  0,
  async (main) => {
    const before = await serving(main);
    // A 4 MiB file into a releases directory that has 1 MiB left.
    await onHost(
      state,
      main.host,
      `mount -t tmpfs -o size=1m tmpfs /opt/${main.app}/releases.full 2>/dev/null || (mkdir -p /opt/${main.app}/releases.full && mount -t tmpfs -o size=1m tmpfs /opt/${main.app}/releases.full)`,
    );
    await onHost(
      state,
      main.host,
      `cp -a /opt/${main.app}/releases/. /opt/${main.app}/releases.full/ 2>/dev/null || true; mount --bind /opt/${main.app}/releases.full /opt/${main.app}/releases`,
    );
    await run('dd', [
      'if=/dev/urandom',
      `of=${path.join(main.source, 'big.bin')}`,
      'bs=1M',
      'count=4',
      'status=none',
    ]);
    await nextVersion(main);
    const r = await runBundle('deploy', inputs(main));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/No space left on device/);
    expect(await serving(main)).toEqual(before);
    await onHost(
      state,
      main.host,
      `umount /opt/${main.app}/releases && umount /opt/${main.app}/releases.full && rmdir /opt/${main.app}/releases.full`,
    );
    await rm(path.join(main.source, 'big.bin'));
    const want = await nextVersion(main);
    const rerun = await runBundle('deploy', inputs(main));
    expect(outcome(rerun)).toBe('succeeded');
    expect(await serving(main)).toEqual({ release: rerun.outputs['release-id'], version: want });
  },
);
