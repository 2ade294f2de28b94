// The deploy freeze and the status as scripts run for real in a root-owned
// sandbox (their behaviour on hosts is tested end to end), and the text a
// host's files turn into.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import {
  cleanText,
  freezeCheckStep,
  freezeStep,
  parseFreeze,
  unfreezeStep,
} from '../../src/remote/freeze.js';
import { layout } from '../../src/remote/layout.js';
import { wrapScript } from '../../src/remote/session.js';
import { statusStep } from '../../src/remote/status.js';
import type { Step } from '../../src/remote/step.js';
import { freezeAllowsRollback, releaseRows, statusMarkdown } from '../../src/stages/operations.js';
import type { Host } from '../../src/stages/hosts.js';
import { Log } from '../../src/log.js';
import type { ReleaseListing } from '../../src/remote/verify.js';
import { rootSandbox } from '../support/sandbox.js';

const run = <T>(s: Step<T>): T =>
  s.parse(execFileSync('bash', ['-se'], { input: wrapScript(s.script), encoding: 'utf8' }));

test('a freeze is written root-only, read back, replaced and lifted', () => {
  const root = rootSandbox('freeze');
  try {
    const l = layout('shop', root);
    expect(run(freezeCheckStep(l))).toBeNull();
    const reason = `incident 42: it's $(touch ${root}/pwned) \`id\``;
    expect(run(freezeStep(l, { reason, actor: 'ops', at: '2026-01-01T00:00:00Z', runUrl: '' }))).toBeNull();
    const st = statSync(l.freeze);
    expect([st.uid, st.mode & 0o777, statSync(l.state).mode & 0o777]).toEqual([0, 0o600, 0o700]);
    expect(run(freezeCheckStep(l))).toEqual({ reason, actor: 'ops', at: '2026-01-01T00:00:00Z', runUrl: '' });
    const again = run(freezeStep(l, { reason: 'second', actor: 'b', at: 't', runUrl: '' }));
    expect(again?.reason).toBe(reason);
    expect(run(unfreezeStep(l))?.reason).toBe('second');
    expect(run(freezeCheckStep(l))).toBeNull();
    expect(run(unfreezeStep(l))).toBeNull();
    expect(() => statSync(`${root}/pwned`)).toThrow();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a freeze file of any content reads as a freeze with clean, bounded text', () => {
  const evil = {
    reason: `a\u001b[31mred\r\n::error::spoofed\u202eevil${'x'.repeat(1000)}`,
    actor: 'm\u0000e',
    at: 7,
  };
  const f = parseFreeze(Buffer.from(JSON.stringify(evil)).toString('base64'));
  // eslint-disable-next-line no-control-regex
  expect(f.reason).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202e]/);
  expect(f.reason.startsWith('a [31mred ::error::spoofed evil')).toBe(true);
  expect(f.reason.length).toBe(300);
  expect(f.actor).toBe('m e');
  expect(f.at).toBe('');
  expect(parseFreeze(Buffer.from('not json\u0007').toString('base64'))).toEqual({
    reason: '(no reason given)',
    actor: 'unknown',
    at: '',
    runUrl: '',
  });
  expect(cleanText('  two\n\nlines\t ', 100)).toBe('two lines');
});

test('status reads the slot, the lock holder, the freeze and the history tail', () => {
  const root = rootSandbox('status');
  try {
    const l = layout('shop', root);
    expect(run(statusStep(l, 3)).empty).toBe(true);
    run(freezeStep(l, { reason: 'hold', actor: 'ops', at: 't', runUrl: '' }));
    writeFileSync(l.activeSlot, 'green\n');
    writeFileSync(l.lockHolder, 'deploy by someone since t (no run URL)\n');
    writeFileSync(l.history, ['one', 'two', 'three', 'four \u001b[2J'].join('\n') + '\n');
    writeFileSync(l.lockFile, '');
    const free = run(statusStep(l, 3));
    expect(free).toMatchObject({
      empty: false,
      activeSlot: 'green',
      locked: false,
      holder: 'deploy by someone since t (no run URL)',
      freeze: { reason: 'hold' },
      history: ['two', 'three', 'four [2J'],
    });
    // A live flock on the lock file is seen as held.
    const held = run({
      ...statusStep(l, 3),
      script: `exec 9>>${l.lockFile}; flock -n 9\n${statusStep(l, 3).script}`,
    });
    expect(held.locked).toBe(true);
    expect(readFileSync(l.freeze, 'utf8')).toContain('"reason":"hold"');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('releases are listed newest first as current, standby or neither; the markdown escapes cells', () => {
  const rel = (id: string, status: string, created: number) => ({
    id,
    status,
    created,
    venv: '',
    revision: id === 'r3' ? 'a|b' : '',
    schema_revision: '',
    served: true,
  });
  const listing = {
    releases: [rel('r1', 'ready', 1), rel('r2', 'bad', 2), rel('r3', 'ready', 3), rel('r4', 'ready', 4)],
    links: { current: 'r4', 'slots/blue': 'r4', 'slots/green': 'r3' },
    venvs: [],
  };
  const rows = releaseRows(listing, { activeSlot: 'blue', running: ['blue', 'green'] });
  expect(rows.map((r) => [r.id, r.status, r.role])).toEqual([
    ['r4', 'ready', 'current (blue)'],
    ['r3', 'ready', 'standby (green, running)'],
    ['r2', 'bad', ''],
    ['r1', 'ready', ''],
  ]);
  const md = statusMarkdown([
    {
      host: 'web1',
      ok: true,
      releases: rows,
      locked: false,
      holder: '',
      freeze: { reason: 'x|y', actor: 'ops', at: 't', runUrl: '' },
      history: ['```', 'line'],
    },
  ]);
  expect(md).toContain('| r3 | ready | standby (green, running) | a\\|b |');
  expect(md).toContain('**Deploys frozen since t by ops: x\\|y**');
  expect(md).toContain('    ```\n    line');
});

test('during a freeze a rollback only goes back: to a release that served, older than current, without migrate-down', async () => {
  const freeze = { reason: 'incident', actor: 'ops', at: 'now', runUrl: '' };
  const warnings: string[] = [];
  const log = new Log((l) => warnings.push(l));
  // The freeze is read with the listing (the check's own script is tested above).
  const host = { spec: { label: 'h1' }, layout: layout('shop', '/opt') } as unknown as Host;
  const rel = (id: string, created: number, served: boolean) => ({
    id,
    status: 'ready',
    created,
    venv: '',
    revision: '',
    schema_revision: '',
    served,
  });
  const listing: ReleaseListing = {
    releases: [rel('old', 1, true), rel('cur', 2, true), rel('newer', 3, true), rel('built', 1, false)],
    links: { current: 'cur' },
    venvs: [],
  };
  expect(freezeAllowsRollback([host], [listing], [freeze], 'old', false, log)).toBeUndefined();
  expect(warnings).toEqual([
    expect.stringMatching(/^warning: rollback passes the deploy freeze: h1: .*incident/),
  ]);
  expect(() => freezeAllowsRollback([host], [listing], [freeze], 'newer', false, log)).toThrow(
    /not older than the current cur/,
  );
  expect(() => freezeAllowsRollback([host], [listing], [freeze], 'built', false, log)).toThrow(
    /built never served/,
  );
  expect(() => freezeAllowsRollback([host], [listing], [freeze], 'old', true, log)).toThrow(
    /migrate-down changes the schema/,
  );
  // Not frozen: nothing to say.
  expect(freezeAllowsRollback([host], [listing], [null], 'newer', true, log)).toBeUndefined();
});
