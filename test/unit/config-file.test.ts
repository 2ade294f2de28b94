// The config file: shared settings and environment sections through the
// inputs' own definitions; an input given wins, then the environment, then the
// shared settings, then the default. Every problem names the file, the line and
// the key; secrets and per-run inputs are refused in it.
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { ACTION_NAMES, actions, type ActionName } from '../../src/inputs/actions.js';
import { inputGiven, withConfigFile } from '../../src/inputs/config-file.js';
import type { Field } from '../../src/inputs/fields.js';
import { InputError, parseInputs } from '../../src/inputs/parse.js';
import { ACTION_FILES } from '../../src/meta/action-yml.js';
import { runAction } from '../../src/actions/run.js';
import { Log } from '../../src/log.js';
import { main } from '../../src/cli.js';
import { FIXTURE_KEY } from '../support/keys.js';

const KEY_B64 = 'AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl';
const KNOWN = ['10.0.0.5', '10.0.0.6', '10.0.1.5'].map((h) => `${h} ssh-ed25519 ${KEY_B64}`).join('\n');

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'metalship-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const CONFIG = `# shared by every environment
app: shop
health-path: /healthz
known-hosts: |
${KNOWN.replace(/^/gm, '  ')}
python: python3.10
environments:
  production:
    hosts:
      - 10.0.0.5
      - 10.0.0.6
    verify-timeout: 90
  staging:
    hosts: 10.0.1.5
    health-path: /ready
    worker-command: none
`;

async function file(text: string, name = '.metalship.yml'): Promise<string> {
  const sub = await mkdtemp(path.join(dir, 'ws-'));
  await writeFile(path.join(sub, name), text);
  return sub;
}

/** Inputs the way the runner passes them: a left-out input is '' (action.yml declares no default) unless its definition keeps one. */
function runner(action: ActionName, given: Record<string, string>) {
  const inputs = actions[action].inputs as Record<string, Field>;
  return (name: string): string | undefined =>
    given[name] ?? (inputs[name]?.emptyIsValue ? inputs[name].default : name in inputs ? '' : undefined);
}

function settingsOf(action: ActionName, workspace: string, given: Record<string, string>) {
  const source = withConfigFile(action, runner(action, { 'ssh-key': FIXTURE_KEY, ...given }), workspace);
  return parseInputs(action, source.raw, source) as Record<string, unknown>;
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InputError);
    return (err as InputError).problems;
  }
  throw new Error('no problem reported');
}

describe('precedence: input given > environment section > shared > default', () => {
  test('an environment section overrides the shared settings, which override the defaults', async () => {
    const ws = await file(CONFIG);
    const prod = settingsOf('deploy', ws, { environment: 'production' });
    expect(prod.app).toBe('shop');
    expect((prod.hosts as { host: string }[]).map((h) => h.host)).toEqual(['10.0.0.5', '10.0.0.6']);
    expect(prod['health-path']).toBe('/healthz');
    expect(prod['verify-timeout']).toBe(90);
    expect(prod.python).toBe('python3.10');
    expect(prod['app-root']).toBe('/opt/shop');
    expect(prod['worker-command']).toEqual([]);
    const staging = settingsOf('deploy', ws, { environment: 'Staging' });
    expect(staging['health-path']).toBe('/ready');
    expect(staging['verify-timeout']).toBe(30);
    expect(staging['worker-command']).toEqual([]);
  });
  test('an input given overrides the file; one left out does not', async () => {
    const ws = await file(CONFIG);
    const s = settingsOf('deploy', ws, {
      environment: 'staging',
      'health-path': '/given',
      'verify-timeout': '7',
      app: 'other',
    });
    expect([s.app, s['health-path'], s['verify-timeout'], s['app-root']]).toEqual([
      'other',
      '/given',
      7,
      '/opt/other',
    ]);
  });
  test("worker-command: left out or empty takes the file's, none given turns the worker off", async () => {
    const ws = await file(
      'app: shop\nhosts: 10.0.0.5\nknown-hosts: "' +
        KNOWN.split('\n')[0] +
        '"\nworker-command: python -m worker\n',
    );
    expect(settingsOf('deploy', ws, {})['worker-command']).toEqual(['python', '-m', 'worker']);
    expect(settingsOf('deploy', ws, { 'worker-command': '' })['worker-command']).toEqual([
      'python',
      '-m',
      'worker',
    ]);
    expect(settingsOf('deploy', ws, { 'worker-command': 'none' })['worker-command']).toEqual([]);
    expect(settingsOf('deploy', ws, { 'worker-command': 'python -m other' })['worker-command']).toEqual([
      'python',
      '-m',
      'other',
    ]);
  });
  test('values are text, as in with: python: 3.10 stays 3.10 (not the number 3.1)', async () => {
    const ws = await file('python: 3.10\n');
    const problems = problemsOf(() => settingsOf('deploy', ws, {}));
    expect(problems).toContain(
      ".metalship.yml:1: key 'python': '3.10' is not valid; expected python3, python3.X or an absolute path.",
    );
  });
  test('a rollback takes the runtime settings from the release record, not the file', async () => {
    const ws = await file(CONFIG);
    const s = settingsOf('rollback', ws, { environment: 'staging' });
    expect(s['health-path']).toBeUndefined();
    expect(s['worker-command']).toBeUndefined();
    expect(s.app).toBe('shop');
    expect(s['verify-timeout']).toBe(30);
    // Given as an input, it overrides the record as before.
    expect(settingsOf('rollback', ws, { environment: 'staging', 'health-path': '/x' })['health-path']).toBe(
      '/x',
    );
  });
  test('no file: inputs only, and an environment with no file is fine (GitHub Deployments)', async () => {
    const ws = await mkdtemp(path.join(dir, 'none-'));
    const given = { app: 'shop', hosts: '10.0.0.5', 'known-hosts': KNOWN, environment: 'production' };
    expect(settingsOf('deploy', ws, given).app).toBe('shop');
  });
  test('an environment the file has no section for is refused when it has sections, with a suggestion', async () => {
    const ws = await file(CONFIG);
    expect(problemsOf(() => settingsOf('deploy', ws, { environment: 'prodution' }))).toEqual([
      "Input 'environment': 'prodution' is not a section of .metalship.yml; did you mean production? (its environments: production, staging); expected one of them, or a section added for it.",
    ]);
    const noSections = await file('app: shop\n');
    expect(() =>
      settingsOf('deploy', noSections, { environment: 'prod', hosts: '10.0.0.5', 'known-hosts': KNOWN }),
    ).not.toThrow();
  });
  test('a required input missing says where else it may be given', async () => {
    const ws = await file(CONFIG);
    expect(problemsOf(() => settingsOf('deploy', ws, {}))[0]).toMatch(
      /^Input 'hosts' is required: expected .* \(or in \.metalship\.yml: no environment was chosen, so none of its sections production, staging applies; set the environment input\)\.$/,
    );
  });
  test('a value the file gives is reported at its line and key', async () => {
    const ws = await file('app: shop\nhosts: 10.0.0.5\nenvironments:\n  production:\n    app: Bad_Name\n');
    expect(problemsOf(() => settingsOf('deploy', ws, { environment: 'production' }))).toEqual([
      ".metalship.yml:5: key 'environments.production.app': 'Bad_Name' is not valid; expected 2-32 lowercase letters, digits and hyphens, starting with a letter, e.g. \"shop-api\".",
    ]);
  });
});

describe('the file itself', () => {
  test('config names another file, relative to the workspace; given but absent is an error, left out and absent is not', async () => {
    const ws = await file(CONFIG, 'metalship.yml');
    expect(settingsOf('deploy', ws, { config: 'metalship.yml', environment: 'production' }).app).toBe('shop');
    expect(problemsOf(() => settingsOf('deploy', ws, { config: 'missing.yml' }))).toEqual([
      "Input 'config': cannot read missing.yml (no such file); expected an existing file.",
    ]);
    expect(problemsOf(() => settingsOf('deploy', ws, { config: '.metalship.yml' }))).toEqual([
      "Input 'config': cannot read .metalship.yml (no such file); expected an existing file.",
    ]);
    expect(problemsOf(() => settingsOf('deploy', ws, { config: '../x.yml' }))[0]).toMatch(
      /^Input 'config': '..\/x.yml' contains '..'/,
    );
  });

  const cases: [string, string, string[]][] = [
    [
      'secrets are refused, naming the key, never quoting the value',
      'app: shop\nssh-key: AAAA-very-secret\nenvironments:\n  production:\n    db-password: hunter2hunter2\n',
      [
        ".metalship.yml:2: key 'ssh-key': is a secret: pass it as an input from a GitHub secret (${{ secrets.NAME }}), never in a file of the repository.",
        ".metalship.yml:5: key 'environments.production.db-password': is a secret: pass it as an input from a GitHub secret (${{ secrets.NAME }}), never in a file of the repository.",
      ],
    ],
    [
      'an unknown key is refused with a suggestion',
      'app: shop\nhealth-pth: /x\nfrobnicate: 1\n',
      [
        ".metalship.yml:2: key 'health-pth': is not an input of any metalship action; did you mean health-path?",
        ".metalship.yml:3: key 'frobnicate': is not an input of any metalship action; expected an input name (docs/reference.md) or environments.",
      ],
    ],
    [
      'per-run inputs and the file-choosing inputs are refused',
      'release-id: 20250101_000000\nreason: incident\nenvironment: production\nconfig: x.yml\n',
      [
        ".metalship.yml:1: key 'release-id': is not read from the config file: it names something for one run, so it is given as an input.",
        ".metalship.yml:2: key 'reason': is not read from the config file: it names something for one run, so it is given as an input.",
        ".metalship.yml:3: key 'environment': is not read from the config file: it chooses the section of the file.",
        ".metalship.yml:4: key 'config': is not read from the config file: it names the config file itself.",
      ],
    ],
    [
      'a key of another action is checked too: a bad value fails every action',
      'max-age-hours: 0\nredis-maxmemory: lots\n',
      [
        ".metalship.yml:1: key 'max-age-hours': 0 is out of range; expected a whole number from 1 to 8760 hours.",
        expect.stringMatching(/^\.metalship\.yml:2: key 'redis-maxmemory': /) as unknown as string,
      ],
    ],
    ['duplicate keys', 'app: shop\napp: other\n', ['.metalship.yml:2: Map keys must be unique.']],
    [
      'a list where one value is expected; a mapping as a value',
      'app: [a, b]\nhealth-path: { x: 1 }\n',
      [
        '.metalship.yml:1: key \'app\': is a list; expected one value: 2-32 lowercase letters, digits and hyphens, starting with a letter, e.g. "shop-api".',
        ".metalship.yml:2: key 'health-path': is a mapping; expected one value: a path beginning with /, e.g. /health/ready.",
      ],
    ],
    [
      'a list as the whole file',
      '- app: shop\n',
      [
        '.metalship.yml:1: the file is a list; expected a mapping of settings (key: value), with environments: under it.',
      ],
    ],
    [
      'two documents',
      'app: a\n---\napp: b\n',
      ['.metalship.yml:2: Source contains multiple documents; please use YAML.parseAllDocuments().'],
    ],
    [
      'environments that are not mappings, nested or twice',
      'environments:\n  prod: 3\n  staging:\n    environments: {}\n  Staging: {}\n  "bad*name": {}\n',
      [
        ".metalship.yml:2: environment 'prod': is not a mapping; expected its settings as key: value lines.",
        ".metalship.yml:4: key 'environments.staging.environments': is not an input of any metalship action; environments are sections of the top level only.",
        ".metalship.yml:5: environment 'Staging': is 'staging' again (names are compared ignoring case); expected each environment once.",
        ".metalship.yml:6: environment 'bad*name': is not a valid name; expected an environment name of letters, digits, ._/- and single spaces (at most 255), e.g. production.",
      ],
    ],
    [
      'merge keys are not read',
      'base: &b\n  app: shop\n<<: *b\n',
      [
        ".metalship.yml:1: key 'base': is not an input of any metalship action; expected an input name (docs/reference.md) or environments.",
        ".metalship.yml:3: key '<<': is not an input of any metalship action (YAML merge keys are not read: settings at the top level are shared by every environment).",
      ],
    ],
    [
      'an alias bomb',
      'a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n',
      ['.metalship.yml: Excessive alias count indicates a resource exhaustion attack.'],
    ],
    [
      'a control character in a value',
      'app: "sh\\u0007op"\n',
      [
        expect.stringMatching(
          /^\.metalship\.yml:1: key 'app': has a line break or other control character at position 3/,
        ) as unknown as string,
      ],
    ],
  ];
  test.each(cases)('%s', async (_, text, expected) => {
    const ws = await file(text);
    const problems = problemsOf(() => settingsOf('deploy', ws, { environment: '' }));
    expect(problems).toEqual(expected);
    for (const p of problems) expect(p).not.toMatch(/AAAA-very-secret|hunter2/);
  });

  test('a link or a device is refused unread: a link committed to the repository could lead to .git/config', async () => {
    const ws = await mkdtemp(path.join(dir, 'link-'));
    await writeFile(path.join(ws, 'config'), '[http]\n  extraheader = AUTHORIZATION: basic c2VjcmV0\n');
    await symlink('config', path.join(ws, '.metalship.yml'));
    expect(problemsOf(() => settingsOf('deploy', ws, {}))).toEqual([
      "Input 'config': .metalship.yml is a symbolic link; expected a regular file in the repository.",
    ]);
    expect(problemsOf(() => settingsOf('deploy', ws, { config: '/dev/null' }))).toEqual([
      "Input 'config': /dev/null is not a regular file; expected a regular file in the repository.",
    ]);
  });
  test('a file too large is refused unread', async () => {
    const ws = await file('# ' + 'x'.repeat(300 * 1024) + '\n');
    expect(problemsOf(() => settingsOf('deploy', ws, {}))[0]).toMatch(
      /^\.metalship\.yml: is \d+ bytes, larger than 262144/,
    );
  });
  test('an empty file sets nothing', async () => {
    const ws = await file('# nothing yet\n');
    expect(settingsOf('deploy', ws, { app: 'shop', hosts: '10.0.0.5', 'known-hosts': KNOWN }).app).toBe(
      'shop',
    );
  });
});

describe('inputs the runner passes', () => {
  test('action.yml declares defaults only where an empty value means something of its own, or the runner evaluates it', () => {
    for (const name of ACTION_NAMES) {
      const doc = parse(readFileSync(ACTION_FILES[name].path, 'utf8')) as {
        inputs: Record<string, { default?: string }>;
      };
      const inputs = actions[name].inputs as Record<string, Field>;
      for (const [input, def] of Object.entries(doc.inputs))
        expect([name, input, def.default !== undefined]).toEqual([
          name,
          input,
          inputs[input]!.emptyIsValue === true || inputs[input]!.runnerDefault === true,
        ]);
    }
  });
  test('inputGiven: empty is left out; anything else, none included, is given', () => {
    const f = actions.deploy.inputs['health-path'] as Field;
    const w = actions.deploy.inputs['worker-command'] as Field;
    expect([inputGiven(f, undefined), inputGiven(f, ''), inputGiven(f, ' \n'), inputGiven(f, '/x')]).toEqual([
      false,
      false,
      false,
      true,
    ]);
    expect([
      inputGiven(w, w.default),
      inputGiven(w, ''),
      inputGiven(w, 'python -m worker'),
      inputGiven(w, undefined),
    ]).toEqual([true, false, true, false]);
  });
});

describe('actions and the CLI read it before any host', () => {
  const quiet = new Log(() => undefined);
  test('a bad file fails the action before its body runs, naming file, line and key', async () => {
    const ws = await file('app: shop\nhealth-path: nope\n');
    const saved = process.env.GITHUB_WORKSPACE;
    process.env.GITHUB_WORKSPACE = ws;
    let ran = false;
    try {
      const r = await runAction(
        'deploy',
        async () => {
          ran = true;
          return { outputs: {}, results: [], summary: '' };
        },
        runner('deploy', { 'ssh-key': FIXTURE_KEY }),
        quiet,
      );
      expect(r.ok).toBe(false);
      expect(r.error).toBe(
        ".metalship.yml:2: key 'health-path': 'nope' is not valid; expected a path beginning with /, e.g. /health/ready.",
      );
    } finally {
      if (saved === undefined) delete process.env.GITHUB_WORKSPACE;
      else process.env.GITHUB_WORKSPACE = saved;
      process.exitCode = 0;
    }
    expect(ran).toBe(false);
  });
  test('the CLI reads --config and --environment, and its flags override the file', async () => {
    const ws = await file(CONFIG);
    let err = '';
    const write = process.stderr.write;
    const out = process.stdout.write;
    process.stderr.write = ((c: string | Uint8Array) => (
      (err += String(c)),
      true
    )) as typeof process.stderr.write;
    process.stdout.write = ((c: string | Uint8Array) => (
      (err += String(c)),
      true
    )) as typeof process.stdout.write;
    try {
      // verify-timeout 0 from the command line is refused as the flag; the file's hosts are read.
      const code = await main([
        'verify',
        '--config',
        path.join(ws, '.metalship.yml'),
        '--environment',
        'production',
        '--ssh-key',
        FIXTURE_KEY,
        '--verify-timeout',
        '0',
      ]);
      expect(code).toBe(1);
      expect(err).toContain("Input 'verify-timeout': 0 is out of range");
      expect(err).not.toContain('hosts');
    } finally {
      process.stderr.write = write;
      process.stdout.write = out;
      process.exitCode = 0;
    }
  });
});

test('examples/metalship.yml is a valid config file, each environment enough for a deploy and a restore test', async () => {
  const ws = await mkdtemp(path.join(dir, 'example-'));
  await writeFile(path.join(ws, '.metalship.yml'), readFileSync('examples/metalship.yml', 'utf8'));
  for (const environment of ['production', 'staging']) {
    const s = settingsOf('deploy', ws, { environment });
    expect(s.app).toBe('shop');
    expect(s['expect-body']).toBe('{release}');
  }
  expect(settingsOf('backup-verify', ws, { environment: 'production' }).checks).toEqual([
    'SELECT count(*) > 0 FROM alembic_version',
    'SELECT count(*) > 0 FROM items',
  ]);
});
