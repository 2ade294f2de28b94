// The runtime record kept with each release, and the inputs that read or override it.
import { parseInputs } from '../../src/inputs/parse.js';
import {
  effectiveRuntime,
  parseRuntimeRecord,
  runtimeDefaults,
  runtimeRecord,
  type Runtime,
} from '../../src/inputs/runtime.js';
import { apiUnit, unitFiles } from '../../src/remote/units.js';
import { layout } from '../../src/remote/layout.js';
import { BASE } from '../support/bad-inputs.js';

const custom: Runtime = {
  'app-user': 'shopsvc',
  'app-module': 'shop.asgi:application',
  'uvicorn-args': ['--workers', '2', '--limit-concurrency', '50'],
  'worker-command': ['python', '-m', 'worker', '--queue=fast'],
  'scheduler-command': [],
  'units-ready': 'notify',
  'health-path': '/healthz?deep=1',
};

const record = (settings: Record<string, unknown>, format: unknown = 1) =>
  JSON.stringify({ format, settings });

test('a record reads back as the settings written, no worker included', () => {
  expect(parseRuntimeRecord(runtimeRecord(custom))).toEqual(custom);
  expect(parseRuntimeRecord(runtimeRecord(runtimeDefaults('shop')))).toEqual(runtimeDefaults('shop'));
  expect(JSON.parse(runtimeRecord(custom))).toMatchObject({ settings: { 'scheduler-command': 'none' } });
});

describe('a hostile record is refused, naming the problem, before anything reaches a unit file', () => {
  const good = JSON.parse(runtimeRecord(custom)).settings as Record<string, string>;
  test.each<[string, string, RegExp]>([
    ['not JSON', '{"format": 1, "settings": ', /not JSON/],
    ['an array', '[]', /not a JSON object/],
    ['null', 'null', /not a JSON object/],
    ['another format', record(good, 2), /format is 2, not 1/],
    ['no format', JSON.stringify({ settings: good }), /format is undefined/],
    [
      'settings a string',
      record('x' as unknown as Record<string, unknown>),
      /settings are not a JSON object/,
    ],
    ['a key missing', record({ ...good, 'app-module': undefined }), /app-module is missing/],
    ['a number', record({ ...good, 'health-path': 42 }), /health-path is not a string/],
    [
      'a list',
      record({ ...good, 'worker-command': ['python', '-m', 'worker'] }),
      /worker-command is not a string/,
    ],
    [
      'a directive after a line break',
      record({ ...good, 'app-module': 'main:app\nExecStartPre=/bin/sh' }),
      /line break/,
    ],
    ['a directive in a command', record({ ...good, 'uvicorn-args': '--workers 2\nUser=root' }), /line break/],
    [
      'shell in a command',
      record({ ...good, 'worker-command': 'sh -c "curl x|sh"' }),
      /characters other than/,
    ],
    ['root as the app user', record({ ...good, 'app-user': 'root' }), /app-user/],
    ['a relative health path', record({ ...good, 'health-path': 'health' }), /health-path/],
    ['a control character', record({ ...good, 'health-path': '/h\u0000' }), /control character/],
    [
      'a credential in a command',
      record({ ...good, 'worker-command': 'w https://u:p@x/' }),
      /user name or password/,
    ],
    ['a huge file', record({ ...good, pad: 'x'.repeat(20000) }), /larger than/],
  ])('%s', (_, text, why) => {
    expect(() => parseRuntimeRecord(text)).toThrow(why);
  });

  test('keys of the object prototype are only data', () => {
    const text = `{"format":1,"settings":{"__proto__":{"app-user":"root"},${JSON.stringify(good).slice(1)}}`;
    expect(parseRuntimeRecord(text)['app-user']).toBe('shopsvc');
    expect(({} as Record<string, unknown>)['app-user']).toBeUndefined();
  });

  test('keys it does not know are ignored', () => {
    expect(parseRuntimeRecord(record({ ...good, later: 'x' }))).toEqual(custom);
  });
});

test('what a switch is told wins; then the record; then, for a release without one, the defaults', () => {
  const defaults = runtimeDefaults('shop');
  expect(effectiveRuntime({}, custom, defaults)).toEqual(custom);
  expect(effectiveRuntime({ 'uvicorn-args': [] }, custom, defaults)).toEqual({
    ...custom,
    'uvicorn-args': [],
  });
  expect(effectiveRuntime({ 'worker-command': [] }, custom, defaults)['worker-command']).toEqual([]);
  expect(effectiveRuntime({ 'app-module': 'x:y' }, null, defaults)).toEqual({
    ...defaults,
    'app-module': 'x:y',
  });
});

test('a record written before units-ready existed reads as stable; notify makes the worker and the scheduler, not the api, Type=notify', () => {
  const old = JSON.parse(runtimeRecord(custom)) as { settings: Record<string, string> };
  delete old.settings['units-ready'];
  expect(parseRuntimeRecord(record(old.settings))['units-ready']).toBe('stable');
  expect(() => parseRuntimeRecord(record({ ...old.settings, 'units-ready': 'soon' }))).toThrow(
    /its units-ready 'soon' is not a known value/,
  );
  const l = layout('shop', '/opt/shop');
  const files = (unitsReady: 'stable' | 'notify') =>
    unitFiles(
      {
        layout: l,
        user: 'shop',
        appModule: 'main:app',
        uvicornArgs: [],
        workerCommand: ['python', '-m', 'worker'],
        schedulerCommand: ['python', '-m', 'scheduler'],
        unitsReady,
      },
      { worker: true, scheduler: true },
    );
  const notify = files('notify');
  for (const u of [l.units.workerTemplate, l.units.scheduler]) {
    expect(notify[u]).toMatch(/^Type=notify\nNotifyAccess=all$/m);
    expect(files('stable')[u]).toMatch(/^Type=simple$/m);
    expect(files('stable')[u]).not.toContain('NotifyAccess');
  }
  expect(notify[l.units.apiTemplate]).toBe(files('stable')[l.units.apiTemplate]);
  expect(notify[l.units.apiTemplate]).toMatch(/^Type=simple$/m);
});

test('the same record renders the same unit files', () => {
  const l = layout('shop', '/opt/shop');
  const render = (r: Runtime) =>
    unitFiles(
      {
        layout: l,
        user: r['app-user'],
        appModule: r['app-module'],
        uvicornArgs: r['uvicorn-args'],
        workerCommand: r['worker-command'],
        schedulerCommand: r['scheduler-command'],
        unitsReady: r['units-ready'],
      },
      { worker: true, scheduler: true },
    );
  expect(render(parseRuntimeRecord(runtimeRecord(custom)))).toEqual(render(custom));
  expect(
    apiUnit({
      layout: l,
      user: 'shopsvc',
      appModule: 'm:a',
      uvicornArgs: custom['uvicorn-args'],
      workerCommand: [],
      schedulerCommand: [],
      unitsReady: 'notify',
    }),
  ).toContain('--workers 2 --limit-concurrency 50');
});

describe('worker-command and scheduler-command: none, or an empty value given, runs none', () => {
  const workerOf = (action: 'deploy' | 'release' | 'switch' | 'rollback', values: Record<string, string>) =>
    (
      parseInputs(action, (n) => (({ ...BASE, ...values }) as Record<string, string>)[n]) as {
        'worker-command'?: string[];
      }
    )['worker-command'];

  test.each<[string, string | undefined, string[]]>([
    ['left out: none (an app names its worker)', undefined, []],
    ['given empty', '', []],
    ['a lone line break', '\n', []],
    ['none', 'none', []],
    ['a command', 'python -m worker', ['python', '-m', 'worker']],
  ])('deploy and release, %s', (_, value, words) => {
    const values: Record<string, string> = value === undefined ? {} : { 'worker-command': value };
    expect(workerOf('deploy', values)).toEqual(words);
    expect(workerOf('release', values)).toEqual(words);
  });

  test("switch and rollback take the release's own unless told", () => {
    for (const action of ['switch', 'rollback'] as const) {
      expect(workerOf(action, {})).toBeUndefined();
      expect(workerOf(action, { 'worker-command': '' })).toBeUndefined();
      expect(workerOf(action, { 'worker-command': 'none' })).toEqual([]);
      expect(workerOf(action, { 'worker-command': 'python -m w' })).toEqual(['python', '-m', 'w']);
      expect(() => workerOf(action, { 'worker-command': 'a;b' })).toThrow(/worker-command/);
    }
  });
});
