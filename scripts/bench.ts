// npm run bench: timings on a local test host, metalship beside two baselines on
// the same host in the same run, each under the same steady load through nginx:
// real Capistrano 3 (scripts/bench-capistrano.ts: git, a shared venv, pip,
// migrations, symlink, systemctl restart of the api, worker and scheduler,
// cleanup), and what most SSH deploy actions do (upload a tarball, extract
// into a new directory, `ln -sfn`, `systemctl restart`). Prints figures;
// asserts nothing.

import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  bootHosts,
  buildImage,
  ensureKey,
  shutdownHosts,
  sshRun,
  type HostKeyPair,
  type TestHost,
} from '../test/support/hosts.js';
import { runBundle, SAMPLE_APP, sampleAppInputs } from '../test/support/e2e.js';
import { startLoad, type LoadReport } from '../test/support/load.js';
import {
  cap,
  CAP_PORT,
  capPrepare,
  capPush,
  capSetup,
  ensureCapistrano,
  type CapApp,
  type CapContext,
} from './bench-capistrano.js';
import { setTimeout as sleep } from 'node:timers/promises';

const run = promisify(execFile);
const NAME = 'ms-bench';
/** The fleet: NAME and two more app hosts, and a load balancer, on a private LAN. */
const FLEET = ['ms-bench2', 'ms-bench3'];
const LB = 'ms-benchlb';
const LAN = (n: number) => `bench:10.214.95.${n}`;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/**
 * The rounds to run (BENCH_ONLY=rollback,migrate): deploy, rollback, migrate,
 * capistrano, baseline (the tarball action), cold (all three), fleet; all when unset.
 */
const ONLY = new Set(
  (process.env.BENCH_ONLY ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);
const wanted = (round: string) => ONLY.size === 0 || ONLY.has(round);
/** The timeline of the last metalship run of each kind (the action's own, from its log). */
const timelines = new Map<string, string>();
/** Capistrano's own log of its last run of each kind (Airbrussh: each task, command and duration). */
const capLogs = new Map<string, string>();
/** The Capistrano app the rounds deploy and roll back. */
const CAP_APP: CapApp = { unit: 'capbase', deployTo: '/opt/capbase', migrate: true };
/** Width of the run names in the printed tables. */
const W = 48;

/** The Timeline group of a run's log (written without GitHub's group markers). */
function timelineOf(stdout: string): string {
  const lines = stdout.split('\n');
  const at = lines.indexOf('▶ Timeline');
  if (at < 0) return '';
  const out: string[] = [];
  for (const line of lines.slice(at + 1)) {
    if (!/^(\+|loading)/.test(line)) break;
    out.push(line);
  }
  return out.join('\n');
}

interface Measure {
  seconds: number;
  /** Seconds from the start until the expected version answered through nginx. */
  servingAfter: number | null;
  connections: number;
  load: LoadReport;
  bytes?: number;
}

async function onHost(host: TestHost, key: HostKeyPair, cmd: string): Promise<string> {
  const r = await sshRun(host, key, cmd, { idleMs: 120000 });
  if (r.code !== 0) throw new Error(`${cmd}: ${r.stderr}`);
  return r.stdout;
}

/** SSH logins the host has accepted so far (each is one connection). */
async function logins(host: TestHost, key: HostKeyPair): Promise<number> {
  return Number(
    (
      await onHost(host, key, "journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey' || true")
    ).trim(),
  );
}

/** Polls url until its body contains text; resolves with the seconds since start. */
function watchFor(
  url: string,
  text: string,
  started: number,
): { done: Promise<number | null>; stop: () => void } {
  let stopped = false;
  const done = (async () => {
    while (!stopped) {
      try {
        const body = await (await fetch(url, { signal: AbortSignal.timeout(2000) })).text();
        if (body.includes(text)) return (Date.now() - started) / 1000;
      } catch {
        // not yet
      }
      await sleep(20);
    }
    return null;
  })();
  return { done, stop: () => (stopped = true) };
}

async function measure(
  host: TestHost,
  key: HostKeyPair,
  url: string,
  expect: string,
  action: () => Promise<number | undefined>,
): Promise<Measure> {
  const before = await logins(host, key);
  const load = startLoad(url.replace(/\/version$/, '/'), { workers: 4, pauseMs: 5, maxSeconds: 120 });
  await sleep(500);
  const started = Date.now();
  const watch = watchFor(url, expect, started);
  const bytes = await action();
  const seconds = (Date.now() - started) / 1000;
  const servingAfter = await Promise.race([
    watch.done,
    new Promise<null>((r) => setTimeout(() => r(null), 5000)),
  ]);
  watch.stop();
  await sleep(500);
  const report = await load.stop();
  // The count itself logs in once more.
  const connections = (await logins(host, key)) - before - 1;
  return { seconds, servingAfter, connections, load: report, bytes };
}

// ---- metalship ------------------------------------------------------------

/** The sample app's inputs; its worker and scheduler say when they are ready (ready.py). The default's window is measured apart. */
function appInputs(app: string, source: string): Record<string, string> {
  return { ...sampleAppInputs(app, source), 'units-ready': 'notify' };
}

async function metalshipRun(
  host: TestHost,
  key: HostKeyPair,
  source: string,
  bundle: 'deploy' | 'rollback',
  extra: Record<string, string> = {},
) {
  const r = await runBundle(
    bundle,
    {
      hosts: host.address,
      'ssh-key': key.privateKey,
      'known-hosts': host.knownHosts,
      ...appInputs('bench', source),
      ...extra,
    },
    { env: { GITHUB_ACTIONS: '' } },
  );
  if (r.code !== 0) throw new Error(`${bundle} failed:\n${r.stdout}`);
  return r;
}

// ---- the tarball action (an SSH deploy action): tarball, extract, ln -sfn, systemctl restart

const BASELINE_UNIT = `[Unit]
Description=baseline api
[Service]
User=www-data
WorkingDirectory=/opt/baseline/current
ExecStart=/usr/bin/python3 -m uvicorn main:app --uds /run/baseline/api.sock
RuntimeDirectory=baseline
Restart=always
[Install]
WantedBy=multi-user.target
`;
const BASELINE_SITE = `server {
    listen 8080;
    location / { proxy_pass http://unix:/run/baseline/api.sock; }
}
`;

async function sshCmd(
  host: TestHost,
  key: HostKeyPair,
  knownHostsFile: string,
  cmd: string,
  input?: Buffer,
): Promise<void> {
  const args = [
    '-i',
    key.privateKeyPath,
    '-o',
    `UserKnownHostsFile=${knownHostsFile}`,
    '-o',
    'BatchMode=yes',
    `root@${host.address}`,
    cmd,
  ];
  await new Promise<void>((resolve, reject) => {
    const child = execFile('ssh', args, (err) => (err ? reject(err) : resolve()));
    if (input) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

/**
 * What most SSH deploy actions do: upload, extract, ln -sfn, systemctl restart.
 * With `migrate`, as Capistrano deploys a Python app with migrations: the
 * migrations (`alembic upgrade head`, whether or not there is anything to do)
 * before the link.
 */
async function baselineDeploy(
  host: TestHost,
  key: HostKeyPair,
  knownHostsFile: string,
  source: string,
  id: string,
  opts: { migrate?: boolean } = {},
): Promise<number> {
  const tarball = await tarOf(source);
  // Like scp-then-ssh actions: one connection to upload, one to run the commands.
  await sshCmd(host, key, knownHostsFile, `cat > /tmp/baseline-${id}.tgz`, tarball);
  await sshCmd(
    host,
    key,
    knownHostsFile,
    `set -e; mkdir -p /opt/baseline/releases/${id}; tar -xzf /tmp/baseline-${id}.tgz -C /opt/baseline/releases/${id}; rm /tmp/baseline-${id}.tgz; ` +
      (opts.migrate
        ? `cd /opt/baseline/releases/${id} && runuser -u www-data -- env DATABASE_URL=postgresql:///baseline python3 -m dbmigrate upgrade head; `
        : '') +
      `ln -sfn /opt/baseline/releases/${id} /opt/baseline/current; systemctl restart baseline`,
  );
  return tarball.length;
}

async function baselineRollback(
  host: TestHost,
  key: HostKeyPair,
  knownHostsFile: string,
  id: string,
): Promise<void> {
  await sshCmd(
    host,
    key,
    knownHostsFile,
    `set -e; ln -sfn /opt/baseline/releases/${id} /opt/baseline/current; systemctl restart baseline`,
  );
}

/**
 * A cold deploy as Capistrano makes one into a fresh directory: upload,
 * extract, a virtualenv with the requirements, ln -sfn, systemctl restart.
 */
async function baselineColdDeploy(
  host: TestHost,
  key: HostKeyPair,
  knownHostsFile: string,
  source: string,
  dir: string,
): Promise<number> {
  const tarball = await tarOf(source);
  await sshCmd(host, key, knownHostsFile, `cat > /tmp/${path.basename(dir)}.tgz`, tarball);
  await sshCmd(
    host,
    key,
    knownHostsFile,
    `set -e; mkdir -p ${dir}/releases/1; cd ${dir}/releases/1; tar -xzf /tmp/${path.basename(dir)}.tgz; rm /tmp/${path.basename(dir)}.tgz; ` +
      `python3 -m venv --system-site-packages venv; venv/bin/pip install -q --no-index -r requirements.txt; ` +
      `ln -sfn ${dir}/releases/1 ${dir}/current; ln -sfn ${dir}/current /opt/baseline-cold; systemctl restart baseline-cold`,
  );
  return tarball.length;
}

async function tarOf(source: string): Promise<Buffer> {
  return (
    await run('tar', ['-czf', '-', '-C', source, '--exclude=__pycache__', '.'], {
      encoding: 'buffer',
      maxBuffer: 64 << 20,
    })
  ).stdout;
}

// ---- main -----------------------------------------------------------------

function fmt(measure: Measure): string {
  return [
    `${measure.seconds.toFixed(2)} s`.padStart(8),
    (measure.servingAfter === null ? 'never' : `${measure.servingAfter.toFixed(2)} s`).padStart(8),
    String(measure.connections).padStart(5),
    `${measure.load.failed}/${measure.load.requests}`.padStart(11),
    (measure.load.failed ? JSON.stringify(measure.load.failures) : '').padStart(0),
  ].join('  ');
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

async function main(): Promise<void> {
  // Before any host boots: the Capistrano baseline needs `cap` on this machine.
  if (wanted('capistrano') || wanted('cold')) await ensureCapistrano();
  await buildImage('full');
  const key = await ensureKey('/var/lib/metalship/bench-key');
  await shutdownHosts([NAME, ...FLEET, LB]);
  const [host] = await bootHosts([{ name: NAME, index: 95, lan: LAN(1) }], key);
  if (!host) throw new Error('no host');
  const dir = await mkdtemp(path.join(tmpdir(), 'metalship-bench-'));
  const source = path.join(dir, 'app');
  const knownHostsFile = path.join(dir, 'known_hosts');
  await writeFile(knownHostsFile, host.knownHosts + '\n');
  await cp(SAMPLE_APP, source, { recursive: true });
  const rows: [string, Measure][] = [];
  const cold: { name: string; seconds: number }[] = [];
  const noopMigrate: number[] = [];
  const capCtx: CapContext = { host, key, knownHostsFile, source, dir };
  try {
    await onHost(
      host,
      key,
      "mkdir -p /opt/bench && echo 'REDIS_URL=redis://127.0.0.1:6379/0' > /opt/bench/.env",
    );
    const url = `http://${host.address}/version`;
    let version = 1;
    const setVersion = async () => writeFile(path.join(source, 'version.py'), `VERSION = "v${++version}"\n`);
    const keepTimeline = (name: string, r: { stdout: string }) => timelines.set(name, timelineOf(r.stdout));

    // metalship: first deploy (builds the virtualenv), then rounds of one-file deploys and rollbacks.
    let firstBytes = 0;
    const first = Date.now();
    const r1 = await metalshipRun(host, key, source, 'deploy');
    firstBytes = Number(r1.outputs['bytes-uploaded'] ?? 0);
    const firstSeconds = (Date.now() - first) / 1000;
    keepTimeline('metalship first deploy', r1);
    for (let i = 0; i < (wanted('deploy') || wanted('rollback') ? ROUNDS : 0); i++) {
      await setVersion();
      let previous = '';
      rows.push([
        'metalship deploy (1 file)',
        await measure(host, key, url, `"v${version}"`, async () => {
          const r = await metalshipRun(host, key, source, 'deploy');
          keepTimeline('metalship deploy (1 file)', r);
          previous = r.outputs['previous-release-id'] ?? '';
          return Number(r.outputs['bytes-uploaded']);
        }),
      ]);
      // The rollback goes back to the release the deploy replaced.
      rows.push([
        'metalship rollback',
        await measure(host, key, url, `"release":"${previous}"`, async () => {
          keepTimeline('metalship rollback', await metalshipRun(host, key, source, 'rollback'));
          return undefined;
        }),
      ]);
    }

    // A real app's shape: a database (peer-authenticated, the app user owns it),
    // its migration applied once, then one-file deploys whose migration has nothing to do.
    await onHost(
      host,
      key,
      `runuser -u postgres -- psql -qc 'CREATE ROLE bench LOGIN' && runuser -u postgres -- createdb -O bench bench && ` +
        `runuser -u postgres -- psql -qc 'CREATE ROLE "www-data" LOGIN' && runuser -u postgres -- createdb -O www-data baseline && ` +
        `printf 'REDIS_URL=redis://127.0.0.1:6379/0\\nDATABASE_URL=postgresql:///bench\\n' > /opt/bench/.env`,
    );
    if (wanted('migrate')) {
      await setVersion();
      await metalshipRun(host, key, source, 'deploy', { migrate: 'auto' });
    }
    // Capistrano on the same host (its own unit, nginx on CAP_PORT): a first
    // deploy, untimed, makes the shared venv and applies the migration.
    const capUrl = `http://${host.address}:${CAP_PORT}/version`;
    let capVersion = 500;
    let capCurrent = capVersion;
    const capVersionFile = () => writeFile(path.join(source, 'version.py'), `VERSION = "v${capVersion}"\n`);
    if (wanted('capistrano') || wanted('cold')) await capSetup(capCtx, CAP_APP);
    if (wanted('capistrano')) {
      await capVersionFile();
      await capPush(capCtx, `v${capVersion}`);
      await cap(capCtx, CAP_APP, 'deploy');
      await sleep(2000);
    }
    // Interleaved: metalship's one-file deploy with a no-op migration, then
    // Capistrano's and its rollback (to the release the deploy replaced).
    for (let i = 0; i < (wanted('migrate') || wanted('capistrano') ? ROUNDS : 0); i++) {
      if (wanted('migrate')) {
        await setVersion();
        rows.push([
          'metalship deploy (1 file, no-op migration)',
          await measure(host, key, url, `"v${version}"`, async () => {
            const r = await metalshipRun(host, key, source, 'deploy', { migrate: 'auto' });
            keepTimeline('metalship deploy (1 file, no-op migration)', r);
            noopMigrate.push(Number(/migrate (\d+\.\d+)/.exec(r.summary)?.[1] ?? NaN));
            return Number(r.outputs['bytes-uploaded']);
          }),
        ]);
      }
      if (wanted('capistrano')) {
        const previous = capCurrent;
        capVersion++;
        await capVersionFile();
        await capPush(capCtx, `v${capVersion}`);
        rows.push([
          'Capistrano deploy (1 file, no-op migration)',
          await measure(host, key, capUrl, `"v${capVersion}"`, async () => {
            capLogs.set('Capistrano deploy (1 file, no-op migration)', await cap(capCtx, CAP_APP, 'deploy'));
            return undefined;
          }),
        ]);
        capCurrent = capVersion;
        await sleep(1000);
        rows.push([
          'Capistrano rollback',
          await measure(host, key, capUrl, `"v${previous}"`, async () => {
            capLogs.set('Capistrano rollback', await cap(capCtx, CAP_APP, 'deploy:rollback'));
            return undefined;
          }),
        ]);
        capCurrent = previous;
        await sleep(1000);
      }
    }

    // The same deploy with units-ready at its default, stable: the worker and the scheduler
    // count as started once their process has run units-stable-seconds (2 s).
    if (wanted('migrate')) {
      const stable = { migrate: 'auto', 'units-ready': 'stable' };
      await setVersion();
      await metalshipRun(host, key, source, 'deploy', stable); // untimed: it rewrites the units
      for (let i = 0; i < ROUNDS; i++) {
        await setVersion();
        rows.push([
          'metalship deploy (1 file, no-op migration, units-ready: stable)',
          await measure(host, key, url, `"v${version}"`, async () => {
            const r = await metalshipRun(host, key, source, 'deploy', stable);
            return Number(r.outputs['bytes-uploaded']);
          }),
        ]);
      }
      await setVersion();
      await metalshipRun(host, key, source, 'deploy', { migrate: 'auto' }); // untimed: back to notify
    }

    // The tarball action on the same host: its own unit and nginx site on port 8080.
    const baseUrl = `http://${host.address}:8080/version`;
    let baseVersion = 100;
    if (wanted('baseline') || wanted('rollback') || wanted('migrate')) {
      await onHost(
        host,
        key,
        `mkdir -p /opt/baseline/releases && cat > /etc/systemd/system/baseline.service <<'EOF'\n${BASELINE_UNIT}EOF\ncat > /etc/nginx/sites-enabled/baseline <<'EOF'\n${BASELINE_SITE}EOF\nsystemctl daemon-reload && systemctl enable -q baseline && nginx -t -q && systemctl reload nginx`,
      );
      await writeFile(path.join(source, 'version.py'), `VERSION = "v${baseVersion}"\n`);
      await baselineDeploy(host, key, knownHostsFile, source, `b${baseVersion}`);
      await sleep(2000);
    }
    for (let i = 0; i < (wanted('baseline') || wanted('rollback') ? ROUNDS : 0); i++) {
      baseVersion++;
      await writeFile(path.join(source, 'version.py'), `VERSION = "v${baseVersion}"\n`);
      rows.push([
        'tarball action deploy (1 file)',
        await measure(host, key, baseUrl, `"v${baseVersion}"`, () =>
          baselineDeploy(host, key, knownHostsFile, source, `b${baseVersion}`),
        ),
      ]);
      rows.push([
        'tarball action rollback',
        await measure(host, key, baseUrl, `"v${baseVersion - 1}"`, async () => {
          await baselineRollback(host, key, knownHostsFile, `b${baseVersion - 1}`);
          return undefined;
        }),
      ]);
      await baselineRollback(host, key, knownHostsFile, `b${baseVersion}`);
      await sleep(2000);
    }
    if (wanted('baseline') || wanted('migrate')) {
      // Untimed: the migration's first, real, run; the rounds' migrations have nothing to do.
      baseVersion++;
      await writeFile(path.join(source, 'version.py'), `VERSION = "v${baseVersion}"\n`);
      await baselineDeploy(host, key, knownHostsFile, source, `b${baseVersion}`, { migrate: true });
      await sleep(2000);
    }
    for (let i = 0; i < (wanted('baseline') || wanted('migrate') ? ROUNDS : 0); i++) {
      baseVersion++;
      await writeFile(path.join(source, 'version.py'), `VERSION = "v${baseVersion}"\n`);
      rows.push([
        'tarball action deploy (1 file, no-op migration)',
        await measure(host, key, baseUrl, `"v${baseVersion}"`, () =>
          baselineDeploy(host, key, knownHostsFile, source, `b${baseVersion}`, { migrate: true }),
        ),
      ]);
      await sleep(2000);
    }

    // Cold: a fresh app on the provisioned host, metalship and the baselines in turn.
    if (wanted('cold')) {
      await capPush(capCtx, 'cold');
      await onHost(
        host,
        key,
        `cat > /etc/systemd/system/baseline-cold.service <<'EOF'\n${BASELINE_UNIT.replace(
          '/opt/baseline/current',
          '/opt/baseline-cold',
        )
          .replace('/usr/bin/python3', '/opt/baseline-cold/venv/bin/python')
          .replace(/baseline$/m, 'baseline-cold')
          .replace('/run/baseline/', '/run/baseline-cold/')}EOF\nsystemctl daemon-reload`,
      );
      for (let i = 0; i < ROUNDS; i++) {
        const app = `cold${i}`;
        await onHost(
          host,
          key,
          `mkdir -p /opt/${app} && echo 'REDIS_URL=redis://127.0.0.1:6379/2' > /opt/${app}/.env`,
        );
        const t0 = Date.now();
        const r = await runBundle(
          'deploy',
          {
            hosts: host.address,
            'ssh-key': key.privateKey,
            'known-hosts': host.knownHosts,
            ...appInputs(app, source),
            'server-name': `${app}.bench`,
          },
          { env: { GITHUB_ACTIONS: '' } },
        );
        if (r.code !== 0) throw new Error(`cold deploy failed:\n${r.stdout}`);
        cold.push({ name: 'metalship cold deploy', seconds: (Date.now() - t0) / 1000 });
        keepTimeline('metalship cold deploy', r);
        const t1 = Date.now();
        await baselineColdDeploy(host, key, knownHostsFile, source, `/opt/bcold${i}`);
        cold.push({ name: 'tarball action cold deploy', seconds: (Date.now() - t1) / 1000 });
        // Capistrano into a fresh deploy_to: deploy:check makes the directories,
        // the first deploy clones the repository and makes the venv. Its unit and
        // shared .env are there before, as the others' .env is. No migration:
        // the other two cold deploys have none either.
        const capApp: CapApp = { unit: `capcold${i}`, deployTo: `/opt/capcold${i}`, migrate: false };
        await capPrepare(capCtx, capApp);
        const t2 = Date.now();
        capLogs.set('Capistrano cold deploy', await cap(capCtx, capApp, 'deploy'));
        cold.push({ name: 'Capistrano cold deploy', seconds: (Date.now() - t2) / 1000 });
      }
    }

    const fleet = wanted('fleet') ? await fleetRounds(host, key, source) : { hosts: 0, rows: [] };

    const out: string[] = [];
    out.push(
      `metalship benchmark on a local test host (Debian 12 in systemd-nspawn), ${ROUNDS} round(s); load: 4 clients through nginx`,
    );
    out.push(
      `first deploy (empty host, builds the virtualenv): ${firstSeconds.toFixed(2)} s, ${firstBytes} bytes uploaded`,
    );
    out.push('');
    out.push(
      `${'run'.padEnd(W)}  ${'action'.padStart(8)}  ${'serving'.padStart(8)}  ${'ssh'.padStart(5)}  ${'failed/req'.padStart(11)}`,
    );
    for (const [name, m] of rows) out.push(`${name.padEnd(W)}  ${fmt(m)}`);
    out.push('');
    out.push('medians:');
    for (const name of [...new Set(rows.map(([n]) => n))]) {
      const ms = rows.filter(([n]) => n === name).map(([, m]) => m);
      const bytes = ms.map((m) => m.bytes).filter((b): b is number => typeof b === 'number');
      out.push(
        `  ${name.padEnd(W)} action ${median(ms.map((m) => m.seconds)).toFixed(2)} s, ${/rollback/.test(name) ? 'traffic back' : 'new version serving'} after ${median(ms.map((m) => m.servingAfter ?? Infinity)).toFixed(2)} s, ` +
          `${median(ms.map((m) => m.connections))} SSH connection(s), failed requests ${ms.map((m) => m.load.failed).join('/')}` +
          (bytes.length ? `, ${median(bytes)} bytes uploaded` : ''),
      );
    }
    for (const name of [...new Set(cold.map((c) => c.name))])
      out.push(
        `  ${name.padEnd(W)} action ${median(cold.filter((c) => c.name === name).map((c) => c.seconds)).toFixed(2)} s (rounds: ${cold
          .filter((c) => c.name === name)
          .map((c) => c.seconds.toFixed(2))
          .join(', ')}; a fresh app dir on the provisioned host)`,
      );
    if (noopMigrate.length)
      out.push(
        `  the migrate stage of a one-file deploy with a no-op migration (backup on): ${median(noopMigrate).toFixed(2)} s (median)`,
      );
    out.push('');
    out.push("issue 14's targets (medians; n/a: a round not run):");
    const f = (x: number, unit: string) => (Number.isFinite(x) ? `${x.toFixed(2)}${unit}` : 'n/a');
    const of = (name: string, pick: (m: Measure) => number) =>
      median(rows.filter(([n]) => n === name).map(([, m]) => pick(m)));
    const seconds = (m: Measure) => m.seconds;
    const serving = (m: Measure) => m.servingAfter ?? Infinity;
    const coldOf = (name: string) => median(cold.filter((c) => c.name === name).map((c) => c.seconds));
    const noop = 'deploy (1 file, no-op migration)';
    out.push(
      `  one-file deploy with a no-op migration, metalship / Capistrano: ${f(of(`metalship ${noop}`, seconds) / of(`Capistrano ${noop}`, seconds), 'x')} (target ≤ 0.5x); ` +
        `metalship / tarball action: ${f(of(`metalship ${noop}`, seconds) / of(`tarball action ${noop}`, seconds), 'x')}`,
    );
    out.push(
      `  the same with units-ready: stable (the default: a 2 s window, no signal from the worker), metalship / Capistrano: ${f(of(`metalship ${noop.slice(0, -1)}, units-ready: stable)`, seconds) / of(`Capistrano ${noop}`, seconds), 'x')}`,
    );
    out.push(
      `  its new version serving after: metalship ${f(of(`metalship ${noop}`, serving), ' s')} (target ≤ 2 s), Capistrano ${f(of(`Capistrano ${noop}`, serving), ' s')}`,
    );
    out.push(
      `  rollback, traffic back after: metalship ${f(of('metalship rollback', serving), ' s')} (target ≤ 0.5 s), Capistrano ${f(of('Capistrano rollback', serving), ' s')}; ` +
        `whole action: metalship ${f(of('metalship rollback', seconds), ' s')} (target < 1 s), Capistrano ${f(of('Capistrano rollback', seconds), ' s')}`,
    );
    out.push(
      `  cold deploy on a provisioned host, metalship / Capistrano: ${f(coldOf('metalship cold deploy') / coldOf('Capistrano cold deploy'), 'x')} (target ≤ 1x); ` +
        `metalship / tarball action: ${f(coldOf('metalship cold deploy') / coldOf('tarball action cold deploy'), 'x')}`,
    );
    if (fleet.rows.length) {
      out.push('');
      out.push(
        `fleet: ${fleet.hosts} app hosts behind an nginx load balancer host, load through the balancer (medians of ${ROUNDS}):`,
      );
      for (const figures of fleet.rows)
        out.push(
          `  ${figures.name.padEnd(40)} action ${median(figures.seconds).toFixed(2)} s, failed requests ${figures.failed.join('/')} of ${figures.requests.join('/')}`,
        );
      const one = fleet.rows.find((r) => r.name.includes('one host'));
      const rolling = fleet.rows.find((r) => r.name.includes('rolling'));
      if (one && rolling)
        out.push(
          `  rolling over ${fleet.hosts} hosts against one host: ${(median(rolling.seconds) / median(one.seconds)).toFixed(2)}x (issue 14's target: at most 2x)`,
        );
    }
    out.push('');
    out.push(
      '"action" is the whole action (process start to exit, including SSH setup); "serving" is when the expected version first answered through nginx (for a rollback: when traffic was back on the previous release).',
    );
    out.push(
      'Capistrano: `cap production deploy` (Capistrano 3, git from a bare repository on the host, pushed to untimed before each deploy; linked .env and log/; a shared venv made once, pip install --no-index -r requirements.txt; alembic upgrade head as the app user except cold; symlink; systemctl restart of the api, the worker and the scheduler; cleanup keeping 5) and `cap production deploy:rollback` (symlink back, the same restart). ' +
        'tarball action: what most SSH deploy actions do: upload a tarball, extract into a new directory, (migrations,) ln -sfn, systemctl restart.',
    );
    for (const [name, timeline] of timelines) {
      out.push('');
      out.push(`timeline of the last ${name} (+start, duration, what):`);
      out.push(timeline.replace(/^/gm, '  '));
    }
    for (const [name, log] of capLogs) {
      out.push('');
      out.push(
        `Capistrano's log of the last ${name} (mm:ss since start, then each command and its duration):`,
      );
      out.push(log.trimEnd().replace(/^/gm, '  '));
    }
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
    await shutdownHosts([NAME, ...FLEET, LB]);
  }
}

/** One-file deploys to three app hosts behind a load balancer, rolling one at a time and all at once. */
async function fleetRounds(
  first: TestHost,
  key: HostKeyPair,
  source: string,
): Promise<{
  hosts: number;
  rows: { name: string; seconds: number[]; failed: number[]; requests: number[] }[];
}> {
  const booted = await bootHosts(
    [
      { name: FLEET[0]!, index: 96, lan: LAN(2) },
      { name: FLEET[1]!, index: 97, lan: LAN(3) },
      { name: LB, index: 98, lan: LAN(10) },
    ],
    key,
  );
  const apps = [first, booted[0]!, booted[1]!];
  const lb = booted[2]!;
  for (const h of apps)
    await onHost(
      h,
      key,
      "mkdir -p /opt/fleet && echo 'REDIS_URL=redis://127.0.0.1:6379/1' > /opt/fleet/.env",
    );
  const connection = {
    hosts: [`${lb.address} roles=lb`, ...apps.map((h) => `${h.address} upstream=${h.lan}`)].join('\n'),
    'ssh-key': key.privateKey,
    'known-hosts': [lb, ...apps].map((h) => h.knownHosts).join('\n'),
  };
  const provision = await runBundle(
    'provision',
    { ...connection, app: 'fleet', limit: 'lb', system: 'false', postgresql: 'false', redis: 'false' },
    { env: { GITHUB_ACTIONS: '' } },
  );
  if (provision.code !== 0) throw new Error(`provision of the balancer failed:\n${provision.stdout}`);
  const deploy = async (extra: Record<string, string>) => {
    const r = await runBundle(
      'deploy',
      {
        ...connection,
        ...appInputs('fleet', source),
        'server-name': 'fleet.bench',
        ...extra,
      },
      { env: { GITHUB_ACTIONS: '' } },
    );
    if (r.code !== 0) throw new Error(`fleet deploy failed:\n${r.stdout}`);
    return r;
  };
  let version = 1000;
  const setVersion = () => writeFile(path.join(source, 'version.py'), `VERSION = "v${++version}"\n`);
  await setVersion();
  await deploy({});
  const rows = [
    // The same deploy to one of the hosts, in the same conditions: issue 14's yardstick for rolling.
    {
      name: `deploy (1 file), one host of them`,
      extra: { hosts: apps[0]!.address } as Record<string, string>,
    },
    { name: `deploy (1 file), batch-size 1 (rolling)`, extra: { 'batch-size': '1' } },
    { name: `deploy (1 file), batch-size 3 (all at once)`, extra: { 'batch-size': '3' } },
  ].map((r) => ({ ...r, seconds: [] as number[], failed: [] as number[], requests: [] as number[] }));
  for (let i = 0; i < ROUNDS; i++) {
    for (const row of rows) {
      await setVersion();
      const load = startLoad(`http://${lb.address}/`, {
        workers: 4,
        pauseMs: 5,
        maxSeconds: 120,
        headers: { Host: 'fleet.bench' },
      });
      await sleep(500);
      const started = Date.now();
      const r = await deploy(row.extra);
      row.seconds.push((Date.now() - started) / 1000);
      timelines.set(`fleet ${row.name}`, timelineOf(r.stdout));
      await sleep(500);
      const report = await load.stop();
      row.failed.push(report.failed);
      row.requests.push(report.requests);
    }
  }
  return { hosts: apps.length, rows };
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
