// The release workflow's shell steps, run here with a stand-in for the gh CLI:
// the notes it takes from CHANGELOG.md, and when it moves the major tag. The
// version in package.json must have its CHANGELOG section (the workflow refuses
// to release it otherwise).

import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';

const REPO = path.join(import.meta.dirname, '../..');
type Step = { name?: string; run?: string };
const workflow = parse(readFileSync(path.join(REPO, '.github/workflows/release.yml'), 'utf8')) as {
  jobs: Record<string, { steps: Step[] }>;
};
const step = (name: string) => {
  const found = Object.values(workflow.jobs)
    .flatMap((j) => j.steps)
    .find((s) => s.name?.startsWith(name));
  if (!found?.run) throw new Error(`no step ${name}`);
  return found.run;
};
const version = (JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string })
  .version;

let dir: string;
beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), 'ms-release-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function run(script: string, env: Record<string, string>) {
  return spawnSync('bash', ['-e', '-c', script], {
    cwd: REPO,
    encoding: 'utf8',
    env: { PATH: `${dir}:${process.env.PATH}`, RUNNER_TEMP: dir, GH_REPO: 'acme/shop', ...env },
  });
}

test("package.json's version passes the workflow's checks, and its notes are its CHANGELOG section", () => {
  const check = run(step('The version, its package.json'), {
    EVENT: 'push',
    GITHUB_REF_NAME: `v${version}`,
    GITHUB_OUTPUT: path.join(dir, 'out'),
  });
  expect(check.stdout).toBe('');
  expect(check.status).toBe(0);
  expect(readFileSync(path.join(dir, 'out'), 'utf8')).toBe(`version=${version}\n`);
  const other = run(step('The version, its package.json'), {
    EVENT: 'workflow_dispatch',
    REQUESTED: '0.0.1',
    GITHUB_OUTPUT: path.join(dir, 'out'),
  });
  expect(other.status).toBe(1);
  expect(other.stdout).toContain(`::error::package.json says ${version}, not 0.0.1`);

  expect(run(step('Release notes'), { VERSION: version }).status).toBe(0);
  const notes = readFileSync(path.join(dir, 'notes.md'), 'utf8');
  expect(notes).toContain('### Added');
  expect(notes).not.toMatch(/^## \[/m); // the section alone
  expect(notes).not.toMatch(/^\[[^\]]+\]: /m); // without the link definitions
});

/** A stand-in gh: lists the given tags, says whether v1 exists, logs the rest. */
function fakeGh(tags: string[], majorExists: boolean) {
  const log = path.join(dir, 'gh.log');
  writeFileSync(
    path.join(dir, 'gh'),
    `#!/bin/bash
echo "$*" >> ${log}
case "$*" in
  *matching-refs*) printf '%s\\n' ${tags.map((t) => `refs/tags/${t}`).join(' ')};;
  "api repos/acme/shop/git/ref/tags/v1") ${majorExists ? 'exit 0' : 'exit 1'};;
esac
`,
  );
  chmodSync(path.join(dir, 'gh'), 0o755);
  return () =>
    readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .filter((l) => !l.includes('matching-refs') && !l.includes('git/ref/tags'));
}

test.each([
  ['the newest moves v1', '1.2.0', ['v1.0.0', 'v1.1.9', 'v1.2.0'], true, ['PATCH']],
  ['by version, not by text', '1.10.0', ['v1.9.0', 'v1.10.0'], true, ['PATCH']],
  ['the first v1 release makes v1', '1.0.0', ['v1.0.0'], false, ['create']],
  ['a fix of an older line leaves v1 alone', '1.1.1', ['v1.1.1', 'v1.2.0'], true, []],
])('%s', (_what, v, tags, exists, expected) => {
  const calls = fakeGh(tags, exists);
  const r = run(step('Move the major tag'), { VERSION: v, GITHUB_SHA: 'c0ffee' });
  expect(r.status).toBe(0);
  const made = calls();
  expect(
    made.map((c) =>
      c.startsWith('api -X PATCH repos/acme/shop/git/refs/tags/v1 -f sha=c0ffee -F force=true')
        ? 'PATCH'
        : c === 'api repos/acme/shop/git/refs -f ref=refs/tags/v1 -f sha=c0ffee'
          ? 'create'
          : c,
    ),
  ).toEqual(expected);
});

test('a commit that is not on the default branch is refused (its tag would move v1 around the branch protection)', () => {
  const git = (cwd: string, ...args: string[]) =>
    spawnSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', ...args], {
      cwd,
      encoding: 'utf8',
    }).stdout.trim();
  const origin = path.join(dir, 'origin');
  spawnSync('git', ['init', '-q', '-b', 'main', origin]);
  git(origin, 'commit', '-q', '--allow-empty', '-m', 'on main');
  const onMain = git(origin, 'rev-parse', 'HEAD');
  git(origin, 'checkout', '-q', '-b', 'side');
  git(origin, 'commit', '-q', '--allow-empty', '-m', 'on a side branch');
  const onSide = git(origin, 'rev-parse', 'HEAD');
  const clone = path.join(dir, 'clone');
  spawnSync('git', ['clone', '-q', origin, clone]);
  const onBranch = (sha: string) =>
    spawnSync('bash', ['-e', '-c', step('The commit is on the default branch')], {
      cwd: clone,
      encoding: 'utf8',
      env: { PATH: process.env.PATH, GITHUB_SHA: sha, DEFAULT_BRANCH: 'main' },
    });
  expect(onBranch(onMain).status).toBe(0);
  const refused = onBranch(onSide);
  expect(refused.status).toBe(1);
  expect(refused.stdout).toContain(`::error::${onSide} is not on main`);
});
