// The programs nothing else lints: shellcheck on every shell file of the tree
// and on every script the builders generate, with hostile values where inputs
// reach them (test/support/scripts.ts, the backup and restore steps, every
// provision item), each wrapped as the transport sends it; pyflakes on every
// Python file. Prints nothing and exits 0 when all is clean.
// Run by scripts/test.sh: `npx tsx scripts/lint-scripts.ts`.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { backupInstallScript, backupNowStep, backupProgram, restoreProofStep } from '../src/remote/backup.js';
import {
  dropScratchStep,
  findBackupStep,
  inspectStep,
  prepareScratchStep,
  recordVerifiedStep,
  restoreStep,
  smokeStep,
} from '../src/remote/restore.js';
import { wrapScript } from '../src/remote/session.js';
import {
  PROVISION_VARIANTS,
  ELSEWHERE,
  topologyInputs,
  PUSH_TARGET,
  allScripts,
  offsiteVariants,
  settings,
} from '../test/support/provision.js';
import { hostKeysStep, pushKeyStep, pushProgram, receiverProgram } from '../src/remote/offsite.js';
import { redisTlsStep } from '../src/remote/provision/redis.js';
import { HOSTILE, SCRATCH, scripts } from '../test/support/scripts.js';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

/** A directory that is one valid path and as hostile as a path can be. */
const HOSTILE_DIR = `/srv/it's $(touch /tmp/pwned) \`id\` ; "x" *`;
const BACKUP = { app: 'shop', database: 'shop_db-1', backupDir: HOSTILE_DIR, retentionDays: 30 };

/** Every generated script, by name; each runs wrapped (as the transport sends it) unless it is a program. */
function generated(): Record<string, string> {
  const steps: Record<string, string> = {
    'backup now': backupNowStep(BACKUP, 'pre-migrate-20250101_000000').script,
    'backup install': backupInstallScript({ ...BACKUP, onCalendar: 'Mon..Fri *-*-* 02:00:00' }),
    'restore proof': restoreProofStep(HOSTILE_DIR).script,
    'restore find': findBackupStep({ backupDir: HOSTILE_DIR, database: 'shop', file: '' }).script,
    'restore find file': findBackupStep({
      backupDir: HOSTILE_DIR,
      database: 'shop',
      file: `${HOSTILE_DIR}/a.dump`,
    }).script,
    'restore prepare': prepareScratchStep(SCRATCH).script,
    'push key': pushKeyStep('shop', false).script,
    'push key check': pushKeyStep('shop', true).script,
    'backup host keys': hostKeysStep().script,
    'redis tls': redisTlsStep('10.1.0.9', false).script,
    'redis tls ipv6': redisTlsStep('fd00::9', false).script,
    'redis tls check': redisTlsStep('10.1.0.9', true).script,
    'redis tls keep': redisTlsStep('10.1.0.9', false, false).script,
    ...Object.fromEntries(offsiteVariants().map((item, i) => [`provision offsite ${i}`, item.script])),
    'restore receive': restoreStep({ ...SCRATCH, receive: true, dump: '', size: 1, sha256: 'a'.repeat(64) })
      .script,
    'restore in place': restoreStep({
      ...SCRATCH,
      receive: false,
      dump: `${HOSTILE_DIR}/a.dump`,
      size: 1,
      sha256: 'a'.repeat(64),
    }).script,
    'restore inspect': inspectStep({ ...SCRATCH, checks: [HOSTILE.split('\n')[0]!, 'SELECT true'] }).script,
    'restore smoke': smokeStep({
      ...SCRATCH,
      app: 'shop',
      appRoot: HOSTILE_DIR,
      appUser: 'shop',
      appModule: 'main:app',
      path: `/health?q='$(id)'`,
      timeout: 30,
    }).script,
    'restore drop': dropScratchStep(SCRATCH).script,
    'restore record': recordVerifiedStep(HOSTILE_DIR, {
      verified: HOSTILE,
      backup: HOSTILE,
      created: '',
      restoreSeconds: 1,
      run: '',
    }).script,
  };
  const provision = Object.fromEntries(
    PROVISION_VARIANTS.flatMap((variant, i) =>
      allScripts(settings(variant)).map((text, j) => [`provision variant ${i} script ${j}`, text]),
    ),
  );
  // A db and redis host told what the app hosts use.
  allScripts(settings(topologyInputs(true), ELSEWHERE)).forEach((text, j) => {
    provision[`provision db host with app hosts' logins script ${j}`] = text;
  });
  const wrapped = Object.entries({ ...scripts, ...steps, ...provision }).map(([name, text]) => [
    name,
    wrapScript(text, 'abc123'),
  ]);
  return {
    ...Object.fromEntries(wrapped),
    'backup program': backupProgram(BACKUP),
    'backup receiver': receiverProgram(BACKUP),
    'backup push': pushProgram('shop', HOSTILE_DIR, PUSH_TARGET),
  };
}

interface Finding {
  file: string;
  line: number;
  column: number;
  endLine: number;
  endColumn: number;
  code: number;
  level: string;
  message: string;
}

/**
 * The hostile values' expansions. Every value is single-quoted, so shellcheck
 * sees `$(...)` in single quotes (SC2016) wherever one arrives: that is the
 * quoting working, and such a finding on a quoted value is data, not code.
 */
const HOSTILE_DATA = /\$\(touch \/tmp\/pwned\)|\$\(id\)|\$\(rm -rf \/\)|`id`|`x`/;

/** Whether a finding in a generated script is a hostile value, quoted (data, not code). */
function hostileData(finding: Finding): boolean {
  const lines = readFileSync(finding.file, 'utf8').split('\n');
  // The finding's own span: a quoted value may run over several lines.
  const span = lines
    .slice(finding.line - 1, finding.endLine)
    .join('\n')
    .slice(
      finding.column - 1,
      -((lines[finding.endLine - 1] ?? '').length - (finding.endColumn - 1)) || undefined,
    );
  return finding.code === 2016 && HOSTILE_DATA.test(span);
}

function shellcheck(files: string[]): Finding[] {
  if (files.length === 0) return [];
  const r = spawnSync('shellcheck', ['-f', 'json1', '-S', 'style', ...files], {
    encoding: 'utf8',
    maxBuffer: 1 << 28,
  });
  if (r.error)
    throw new Error(`shellcheck is not installed (apt-get install shellcheck): ${r.error.message}`);
  return (JSON.parse(r.stdout) as { comments: Finding[] }).comments;
}

function show(findings: Finding[], names: Map<string, string>): string {
  return findings
    .map((f) => {
      const text = readFileSync(f.file, 'utf8').split('\n')[f.line - 1] ?? '';
      return `${names.get(f.file) ?? path.relative(repo, f.file)}:${f.line}: SC${f.code} (${f.level}): ${f.message}\n    ${text.trim().slice(0, 200)}`;
    })
    .join('\n');
}

const problems: string[] = [];

// The shell files of the tree (the copies in dist/ are the same files).
const tracked = execFileSync(
  'git',
  ['ls-files', '--cached', '--others', '--exclude-standard', '*.sh', '.ci/run'],
  {
    cwd: repo,
    encoding: 'utf8',
  },
)
  .split('\n')
  .filter((f) => f && !f.startsWith('dist/') && !f.startsWith('node_modules/'))
  .map((f) => path.join(repo, f));
const own = shellcheck(tracked);
if (own.length) problems.push(show(own, new Map()));

// The generated scripts.
const dir = mkdtempSync(path.join(tmpdir(), 'metalship-shellcheck-'));
try {
  const names = new Map<string, string>();
  Object.entries(generated()).forEach(([name, text], i) => {
    const file = path.join(dir, `${i}.sh`);
    writeFileSync(file, text.startsWith('#!') ? text : `#!/bin/bash\n${text}`);
    names.set(file, `[${name}]`);
  });
  const found = shellcheck([...names.keys()]).filter((f) => !hostileData(f));
  if (found.length) problems.push(show(found, names));
} finally {
  rmSync(dir, { recursive: true, force: true });
}

// The Python files (the copies in dist/ are the same files).
const python = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '*.py'], {
  cwd: repo,
  encoding: 'utf8',
})
  .split('\n')
  .filter((f) => f && !f.startsWith('dist/'));
const flakes = spawnSync('pyflakes3', python, { cwd: repo, encoding: 'utf8' });
if (flakes.error)
  throw new Error(`pyflakes3 is not installed (apt-get install pyflakes3): ${flakes.error.message}`);
if (flakes.status !== 0) problems.push(flakes.stdout + flakes.stderr);

if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
