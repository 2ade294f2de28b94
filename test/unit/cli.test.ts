// The command line: flags, files named with @ (~ included), --version, bare
// booleans, suggestions for typos, and what a failed run prints.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { didYouMean, main, parseArgs, version } from '../../src/cli.js';

let home: string;
const saved: Record<string, string | undefined> = {};
const ENV = ['HOME', 'GITHUB_ACTIONS', 'GITHUB_STEP_SUMMARY', 'GITHUB_OUTPUT'];

beforeAll(async () => {
  home = await mkdtemp(path.join(tmpdir(), 'metalship-cli-'));
  await writeFile(path.join(home, 'deploy-key'), 'key text\n');
  for (const k of ENV) saved[k] = process.env[k];
  process.env.HOME = home;
  // A terminal, not a runner.
  delete process.env.GITHUB_ACTIONS;
  delete process.env.GITHUB_STEP_SUMMARY;
  delete process.env.GITHUB_OUTPUT;
});
afterAll(async () => {
  for (const k of ENV) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  process.exitCode = 0;
  await rm(home, { recursive: true, force: true });
});

/** Runs the command line, capturing what it writes. */
async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const write = { out: process.stdout.write, err: process.stderr.write };
  process.stdout.write = ((c: string | Uint8Array) => (
    (out += String(c)),
    true
  )) as typeof process.stdout.write;
  process.stderr.write = ((c: string | Uint8Array) => (
    (err += String(c)),
    true
  )) as typeof process.stderr.write;
  try {
    const code = await main(args);
    return { code, out, err };
  } finally {
    process.stdout.write = write.out;
    process.stderr.write = write.err;
    process.exitCode = 0;
  }
}

test('@~/path reads the file in the home directory, as the README writes it', () => {
  expect(parseArgs('deploy', ['--ssh-key', '@~/deploy-key'])).toEqual({ 'ssh-key': 'key text\n' });
  expect(parseArgs('deploy', ['--ssh-key=@~/deploy-key'])).toEqual({ 'ssh-key': 'key text\n' });
  expect(parseArgs('deploy', ['--app', '@@~/x'])).toEqual({ app: '@~/x' });
  expect(parseArgs('deploy', ['--ssh-key', '@~/missing'])).toBe(
    `--ssh-key: cannot read the file ${home}/missing (no such file)`,
  );
});

test('--version prints the package version', async () => {
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  expect(version()).toBe(pkg.version);
  for (const flag of ['--version', '-V'])
    expect(await cli([flag])).toEqual({ code: 0, out: `metalship ${pkg.version}\n`, err: '' });
});

test('a true-or-false input may be given alone, negated, or with its value', () => {
  expect(parseArgs('deploy', ['--migrate', '--app', 'shop'])).toEqual({ migrate: 'true', app: 'shop' });
  expect(parseArgs('deploy', ['--app', 'shop', '--migrate'])).toEqual({ migrate: 'true', app: 'shop' });
  expect(parseArgs('deploy', ['--no-migrate'])).toEqual({ migrate: 'false' });
  expect(parseArgs('deploy', ['--migrate', 'false'])).toEqual({ migrate: 'false' });
  expect(parseArgs('deploy', ['--migrate', 'auto', '--app', 'shop'])).toEqual({
    migrate: 'auto',
    app: 'shop',
  });
  expect(parseArgs('deploy', ['--migrate=true'])).toEqual({ migrate: 'true' });
  expect(parseArgs('deploy', ['--no-migrate=true'])).toBe('--no-migrate takes no value');
  // Other inputs still take the next word, even one that starts with --.
  expect(parseArgs('deploy', ['--pip-args', '--no-index'])).toEqual({ 'pip-args': '--no-index' });
  expect(parseArgs('deploy', ['--app'])).toBe('--app needs a value');
  expect(parseArgs('deploy', ['--no-app'])).toMatch(/^unknown input --no-app for deploy/);
});

test('a mistyped action or input gets a suggestion', async () => {
  expect(didYouMean('rollbak', ['deploy', 'rollback'])).toBe('rollback');
  expect(didYouMean('zzzzzz', ['deploy', 'rollback'])).toBeNull();
  const r = await cli(['deplyo', '--app', 'shop']);
  expect(r.code).toBe(2);
  expect(r.err).toMatch(/^error: unknown action 'deplyo'; did you mean deploy\?\n/);
  expect(parseArgs('deploy', ['--ssh-keys', 'x'])).toBe(
    'unknown input --ssh-keys for deploy; did you mean --ssh-key? (see metalship deploy --help)',
  );
  expect(parseArgs('deploy', ['--no-migarte'])).toMatch(/did you mean --no-migrate\?/);
  expect(parseArgs('deploy', ['--frobnicate', 'x'])).not.toMatch(/did you mean/);
});

test('a failed run prints its error, not the job summary markdown', async () => {
  const r = await cli(['release', '--hosts', 'web1.example.com', '--app', 'Bad_Name']);
  expect(r.code).toBe(1);
  expect(r.out).toMatch(/^error: /m);
  expect(r.out).toContain("Input 'app'");
  expect(r.out).not.toContain('##');
  expect(r.out).not.toContain('No host was contacted');
});

test("a secret's @value that is no file is not printed; names of Object's own properties are no inputs", () => {
  const r = parseArgs('deploy', ['--ssh-key-passphrase', '@Sup3rS3cret!']);
  expect(r).toBe('--ssh-key-passphrase: cannot read the file given (no such file)');
  expect(parseArgs('deploy', ['--source', '@/nonexistent/x'])).toMatch(
    /cannot read the file \/nonexistent\/x/,
  );
  expect(parseArgs('deploy', ['--toString', 'x'])).toMatch(/^unknown input --toString/);
  expect(parseArgs('deploy', ['--constructor', 'x'])).toMatch(/^unknown input --constructor/);
});
