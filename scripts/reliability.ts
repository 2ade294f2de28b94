// npm run reliability: runs the reliability and security tests (unit and e2e, on
// real test hosts; needs root) and writes docs/reliability.md from their results.

import { execFileSync, spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { InputError, parseInputs } from '../src/inputs/parse.js';
import { ACTION_NAMES } from '../src/inputs/actions.js';
import { BAD_INPUT_COMBINATIONS, BAD_INPUTS, BASE } from '../test/support/bad-inputs.js';
import { SCAN_RESULT_FILE } from '../test/support/e2e.js';
import type { ScanResult } from '../test/support/secret-scan.js';
import { DEBIAN_RELEASES, type DebianRelease } from '../test/support/hosts.js';
import { alertsFile, alertsTable, type AlertFigures } from '../test/support/alerts.js';
import { securityFile, securityTables, type SecurityFigures } from '../test/support/security.js';

// Every e2e file, so that the secret scan covers the whole suite's logs.
const FILES = [
  'test/unit/bad-inputs.test.ts',
  'test/unit/input-trust.test.ts',
  'test/unit/generated-files.test.ts',
  'test/unit/secret-scan.test.ts',
  'test/unit/security.test.ts',
  ...readdirSync('test/e2e')
    .filter((f) => f.endsWith('.test.ts'))
    .sort()
    .map((f) => `test/e2e/${f}`),
];

/** A figures file written by this run (not left over from an earlier one), or null. */
async function fromThisRun<T extends { at: string }>(file: string, since: number): Promise<T | null> {
  try {
    const data = JSON.parse(await readFile(file, 'utf8')) as T;
    return Date.parse(data.at) >= since ? data : null;
  } catch {
    return null;
  }
}

interface JestAssertion {
  title: string;
  fullName: string;
  status: 'passed' | 'failed' | 'pending' | 'skipped';
  duration?: number;
}
interface JestReport {
  numPassedTests: number;
  numFailedTests: number;
  testResults: { name: string; assertionResults: JestAssertion[] }[];
}

/** The commit the report is of, as git names it (with "+changes" when the tree differs from it). */
function commit(): string {
  const git = (...args: string[]) => execFileSync('git', args, { encoding: 'utf8' }).trim();
  try {
    return (
      git('rev-parse', '--short', 'HEAD') +
      (git('status', '--porcelain', '--untracked-files=no') ? '+changes' : '')
    );
  } catch {
    return 'an unknown commit';
  }
}

/** Every file on Debian 12; the security figures' provision test also on the other releases. */
const MAIN_RELEASE: DebianRelease = 'bookworm';
const PROVISION_TEST = 'test/e2e/provision.test.ts';

async function runJest(outputFile: string, files: string[], release: DebianRelease): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn('npx', ['jest', '--json', `--outputFile=${outputFile}`, ...files], {
      env: { ...process.env, NODE_OPTIONS: '--experimental-vm-modules', METALSHIP_DEBIAN: release },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      process.stdout.write(c);
    });
    child.on('close', () => resolve(out));
  });
}

const cell = (text: string) =>
  text
    .replace(/\|/g, '\\|')
    .replace(/\n/g, '\\n')
    .replace(/`/g, 'ˋ')
    // Other control characters (a NUL, an escape) as \uXXXX: the report stays text.
    .replace(/\p{Cc}/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
const mark = (status: string | undefined) =>
  status === 'passed' ? '✅ passed' : status ? `❌ ${status}` : '– not run';

function byFile(report: JestReport, file: string): JestAssertion[] {
  return report.testResults.find((r) => r.name.endsWith(file))?.assertionResults ?? [];
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'metalship-reliability-'));
  const jsonFile = path.join(dir, 'report.json');
  const started = Date.now();
  await runJest(jsonFile, FILES, MAIN_RELEASE);
  const report = JSON.parse(await readFile(jsonFile, 'utf8')) as JestReport;
  const scanned = await fromThisRun<ScanResult & { at: string }>(SCAN_RESULT_FILE, started);
  const scanOk = !!scanned && scanned.findings.length === 0 && scanned.runs > 0;
  // The provision test on each other release, for its security figures.
  const provisionRuns: { release: DebianRelease; passed: number; failed: number }[] = [];
  for (const release of DEBIAN_RELEASES.filter((r) => r !== MAIN_RELEASE)) {
    const file = path.join(dir, `provision-${release}.json`);
    await runJest(file, [PROVISION_TEST], release);
    const r = JSON.parse(await readFile(file, 'utf8')) as JestReport;
    provisionRuns.push({ release, passed: r.numPassedTests, failed: r.numFailedTests });
  }
  await rm(dir, { recursive: true, force: true });
  const security = new Map<DebianRelease, SecurityFigures | null>();
  for (const release of DEBIAN_RELEASES)
    security.set(release, await fromThisRun<SecurityFigures>(securityFile(release), started));
  const alerts = await fromThisRun<AlertFigures>(alertsFile(MAIN_RELEASE), started);

  const out: string[] = [
    '# Reliability and security report',
    '',
    `Generated by \`npm run reliability\` on ${new Date().toISOString().slice(0, 10)} (metalship at ${commit()}) from one run of ${FILES.length} test files, ` +
      `on real Debian 12 test hosts (systemd-nspawn): **${report.numPassedTests} passed, ${report.numFailedTests} failed**; ` +
      `whole-suite secret scan: **${scanned ? (scanOk ? 'nothing found' : `${scanned.findings.length} found`) : 'not run'}**.`,
    '',
    'Who may reach what on a host, and the test that proves each line: [threat-model.md](threat-model.md).',
  ];

  out.push('', '## 1. Bad and hostile input', '');
  const cases = [
    ...BAD_INPUTS.map(([action, input, value]) => ({ action, input, value, other: {} })),
    ...BAD_INPUT_COMBINATIONS.map(([action, input, value, , other]) => ({ action, input, value, other })),
  ];
  out.push(
    `${cases.length} invalid or hostile values across the actions. Each is refused before any host is contacted; the message is what the step prints.`,
    '',
    '| action | input | value | message | result |',
    '|---|---|---|---|---|',
  );
  // The file first checks that BASE is valid for every action, then the cases in this order.
  const unit = byFile(report, 'test/unit/bad-inputs.test.ts').slice(ACTION_NAMES.length);
  cases.forEach(({ action, input, value, other }, i) => {
    const inputs: Record<string, string> = { ...BASE, ...other, [input]: value };
    let message = '(accepted!)';
    try {
      parseInputs(action, (name) => inputs[name]);
    } catch (err) {
      if (err instanceof InputError)
        message = err.problems.find((p) => p.startsWith(`Input '${input}'`)) ?? err.problems.join(' ');
    }
    out.push(
      `| ${action} | \`${input}\` | \`${cell(value.slice(0, 60))}\` | ${cell(message)} | ${mark(unit[i]?.status)} |`,
    );
  });

  const section = (
    title: string,
    intro: string,
    rows: [string, JestAssertion[]][],
    filter: (t: string) => boolean = () => true,
  ) => {
    out.push(...(title ? ['', title] : []), '', intro, '', '| test | result |', '|---|---|');
    for (const [file, tests] of rows)
      for (const t of tests.filter((x) => filter(x.title)))
        out.push(`| ${cell(t.title)} (${path.basename(file)}) | ${mark(t.status)} |`);
  };
  const e2e = (file: string): [string, JestAssertion[]] => [file, byFile(report, file)];
  section(
    '## 2. Faults',
    'For each phase of a deploy, the run is killed and, separately, its host loses its network (for 40 s), at a log line of the phase and once its process is seen running on the host; during the dependency install and the switch the host also reboots; a disk fills up, and a command hangs. Afterwards a complete release serves, no lock blocks the next run beyond its stale-lock rule (at once after a kill, a heartbeat that stops for 30 s after a cut), nothing of the faulty run still runs on the host, and a re-run succeeds.',
    [
      e2e('test/e2e/faults.test.ts'),
      e2e('test/e2e/deploy.test.ts'),
      e2e('test/e2e/foundation.test.ts'),
      e2e('test/e2e/migrate.test.ts'),
    ],
    (t) => /kill|network|cut|reboot|hang|full disk|idle timeout|two deploys|fails|failing/i.test(t),
  );
  out.push('', '## 3. Secrets', '');
  if (scanned)
    out.push(
      `After the tests, every bundle run's log as the runner shows it, with its job summary and outputs, was searched for every form of every secret the runs were given or the tests set up (the SSH private keys whole and line by line, the passphrase, database and Redis passwords, the \`.env\` text, its values and their lines): ` +
        `**${scanned.runs} bundle runs, ${scanned.lines} log lines, ${scanned.secrets} secrets in ${scanned.forms} forms: ${scanned.findings.length ? `${scanned.findings.length} found` : 'none found'}**` +
        (scanned.tooShort
          ? ` (${scanned.tooShort} lines or values under 8 characters were not searched on their own).`
          : '.'),
      ...scanned.findings.map(
        (f) => `- ❌ secret input \`${f.input}\` (${f.form}) in the log of ${cell(f.where)}, line ${f.line}`,
      ),
    );
  else out.push('❌ The whole-suite secret scan did not report for this run.');
  section(
    '',
    'The scanner is tested by planting secrets; these tests also check that logs are masked where a secret is echoed back:',
    [
      e2e('test/unit/secret-scan.test.ts'),
      e2e('test/e2e/foundation.test.ts'),
      e2e('test/e2e/migrate.test.ts'),
    ],
    (t) => /secret|planted|scan|searched|once, on the first host/i.test(t),
  );
  section('## 4. Security of a provisioned host', 'From the provision e2e test on a bare host, Debian 12.', [
    e2e(PROVISION_TEST),
  ]);
  out.push(
    '',
    `The same test on the other releases: ${provisionRuns.map((r) => `${r.release} ${r.passed} passed, ${r.failed} failed`).join('; ')}.`,
  );
  out.push(
    ...securityTables(
      DEBIAN_RELEASES.map((release) => ({ release, figures: security.get(release) ?? null })),
    ),
  );
  section(
    '## 5. Trust boundaries',
    "Each attack of [threat-model.md](threat-model.md), performed on a real host (the app user, the app's own code, package build code, a compromised host, any local user), and the checks of inputs and generated files:",
    [
      e2e('test/e2e/trust.test.ts'),
      e2e('test/e2e/upload-trust.test.ts'),
      e2e('test/unit/input-trust.test.ts'),
    ],
  );
  const generated = byFile(report, 'test/unit/generated-files.test.ts');
  out.push(
    '',
    `Every generated unit, site and config file, built from hostile but valid values and parsed back as its program reads it (test/unit/generated-files.test.ts): **${generated.filter((t) => t.status === 'passed').length} of ${generated.length} passed**.`,
  );
  out.push('', '## 6. Alerts', '', ...alertsTable(alerts));
  out.push(
    '',
    '## Limits',
    '',
    "- The upload phase's faults fire when the release group starts on the host, before or while the changed files are sent (a one-file upload is too short to catch in the middle); the other phases' faults wait until the phase's own process runs on the host.",
    '- The runs killed during upload and switch are in deploy.test.ts, under a steady load (0 failed requests); faults.test.ts cuts those two phases and reboots the host in the switch.',
    '- A test host is a systemd-nspawn container: lynis cannot count the kernel settings (`/proc/sys` is read-only), and a reboot restarts the container, not a kernel.',
    '',
  );
  await writeFile('docs/reliability.md', out.join('\n'));
  process.stdout.write(
    `\nwrote docs/reliability.md (${report.numPassedTests} passed, ${report.numFailedTests} failed)\n`,
  );
  if (report.numFailedTests || provisionRuns.some((r) => r.failed) || !scanOk) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`reliability report failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
