// A rollback reads what it needs before traffic moves in one script: the
// releases, the freeze and the likely target's runtime record (the release the
// standby slot holds, or the one named). Run for real in a root sandbox.
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { layout } from '../../src/remote/layout.js';
import { rollbackPlanStep } from '../../src/remote/rollback.js';
import { wrapScript } from '../../src/remote/session.js';
import { rootSandbox } from '../support/sandbox.js';

function plan(root: string, requested: string) {
  const l = layout('shop', root);
  const step = rollbackPlanStep(l, requested, 100);
  return step.parse(execFileSync('bash', ['-s'], { input: wrapScript(step.script), encoding: 'utf8' }));
}

test('the standby slot names the record read; a named release is read instead; a link is never followed', () => {
  const root = rootSandbox('plan');
  try {
    for (const id of ['r1', 'r2', 'r3']) {
      mkdirSync(`${root}/releases/${id}/.metalship`, { recursive: true });
      writeFileSync(`${root}/releases/${id}/.metalship/status`, 'ready\n');
    }
    writeFileSync(`${root}/releases/r1/.metalship/runtime.json`, '{"of":"r1"}\n');
    symlinkSync(`${root}/releases/r1/.metalship/runtime.json`, `${root}/releases/r3/.metalship/runtime.json`);
    mkdirSync(`${root}/slots`);
    mkdirSync(`${root}/.metalship`, { mode: 0o700 });
    symlinkSync(`${root}/releases/r1`, `${root}/slots/blue`);
    symlinkSync(`${root}/releases/r2`, `${root}/slots/green`);
    symlinkSync(`${root}/releases/r2`, `${root}/current`);
    writeFileSync(`${root}/.metalship/active-slot`, 'green\n');

    const standby = plan(root, '');
    expect(standby.recordOf).toBe('r1');
    expect(standby.record).toBe('{"of":"r1"}\n');
    expect(standby.freeze).toBeNull();
    expect(standby.listing.links).toEqual({ current: 'r2', 'slots/blue': 'r1', 'slots/green': 'r2' });
    expect(standby.listing.releases.map((r) => r.id).sort()).toEqual(['r1', 'r2', 'r3']);

    writeFileSync(`${root}/.metalship/freeze`, JSON.stringify({ reason: 'incident 9', actor: 'ops' }));
    const named = plan(root, 'r2');
    expect(named).toMatchObject({ recordOf: 'r2', record: null, freeze: { reason: 'incident 9' } });
    // A record that is a link is no record.
    expect(plan(root, 'r3')).toMatchObject({ recordOf: 'r3', record: null });
    // Nothing serving yet: no standby, nothing read.
    execFileSync('rm', [`${root}/.metalship/active-slot`]);
    expect(plan(root, '')).toMatchObject({ recordOf: '', record: null });
  } finally {
    execFileSync('rm', ['-rf', root]);
  }
});
