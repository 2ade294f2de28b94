// ms_root_only, run for real: root acts below a path only when no other user
// can swap a directory on the way, as written or as resolved.
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { rootOnly } from '../../src/remote/paths.js';
import { rootSandbox } from '../support/sandbox.js';

const NOBODY = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());

function check(p: string): { ok: boolean; why: string } {
  const r = spawnSync('bash', ['-c', `set -eu\n${rootOnly(p)}`], { encoding: 'utf8' });
  return { ok: r.status === 0, why: r.stderr.trim() };
}

let box: string;
beforeAll(() => {
  box = rootSandbox('paths');
  mkdirSync(path.join(box, 'root-only/sub'), { recursive: true });
  // Another user's directory, holding a link to a root-only place.
  mkdirSync(path.join(box, 'theirs'));
  chownSync(path.join(box, 'theirs'), NOBODY, NOBODY);
  symlinkSync(path.join(box, 'root-only'), path.join(box, 'theirs/link'));
  symlinkSync(path.join(box, 'theirs'), path.join(box, 'to-theirs'));
});
afterAll(() => rmSync(box, { recursive: true, force: true }));

test('a path whose every directory is root-only passes, missing parts included', () => {
  expect(check(path.join(box, 'root-only/sub'))).toEqual({ ok: true, why: '' });
  expect(check(path.join(box, 'root-only/not/yet/made')).ok).toBe(true);
});

test('a link in another user\u2019s directory is refused, though it leads to a root-only place', () => {
  const r = check(path.join(box, 'theirs/link/sub'));
  expect(r.ok).toBe(false);
  expect(r.why).toContain(`${box}/theirs is owned by uid ${NOBODY}`);
});

test('a root-owned link to another user\u2019s directory is refused by where it leads', () => {
  expect(check(path.join(box, 'to-theirs/x')).ok).toBe(false);
});

test('world-writable directories (/tmp) are refused, sticky bit or not', () => {
  const r = check('/tmp/metalship-x');
  expect(r.ok).toBe(false);
  expect(r.why).toMatch(/^\/tmp is owned by uid 0 with mode 1777/);
});

test('several paths are checked in one call, and the refusal names the path that failed', () => {
  const good = path.join(box, 'root-only/sub');
  const bad = path.join(box, 'theirs/link/sub');
  const r = spawnSync('bash', ['-c', `set -eu\n${rootOnly(good, bad, '/opt')}`], { encoding: 'utf8' });
  expect(r.status).not.toBe(0);
  expect(r.stderr).toContain(`${box}/theirs is owned by uid ${NOBODY}`);
  expect(r.stderr).toContain(`${bad} must be owned by root`);
  const ok = spawnSync('bash', ['-c', `set -eu\n${rootOnly(good, path.join(box, 'root-only/new'))}`], {
    encoding: 'utf8',
  });
  expect(ok.status).toBe(0);
});

test('a resolved path holding a newline cannot stand in for another path', () => {
  // '' resolves to nothing, and a link whose target holds a newline resolves
  // to two lines: counted by lines, the two would cancel out.
  const odd = path.join(box, 'root-only/nl\nx');
  mkdirSync(path.join(odd, 'appdir'), { recursive: true });
  chownSync(path.join(odd, 'appdir'), NOBODY, NOBODY);
  const link = path.join(box, 'root-only/nl-link');
  symlinkSync(path.join(odd, 'appdir/rootdir'), link);
  const r = spawnSync('bash', ['-c', `set -eu\n${rootOnly('', link)}`], { encoding: 'utf8' });
  expect(r.status).not.toBe(0);
});

test('a link whose target is a link in another user\u2019s directory is refused, though both ends are root-only', () => {
  // root-only/hop -> theirs/h -> root-only/sub: the owner of theirs/ can re-point h.
  symlinkSync(path.join(box, 'root-only/sub'), path.join(box, 'theirs/h'));
  symlinkSync(path.join(box, 'theirs/h'), path.join(box, 'root-only/hop'));
  const r = check(path.join(box, 'root-only/hop/x'));
  expect(r.ok).toBe(false);
  expect(r.why).toContain(`${box}/theirs is owned by uid ${NOBODY}`);
  // A relative link between root-only places passes.
  symlinkSync('sub', path.join(box, 'root-only/rel'));
  expect(check(path.join(box, 'root-only/rel/x'))).toEqual({ ok: true, why: '' });
});
