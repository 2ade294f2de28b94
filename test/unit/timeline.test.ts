// The run's timeline: every stage (log group) and remote command with its start
// and duration, printed as a collapsed group and summed up per stage in the summary.
import { Log } from '../../src/log.js';

test('stages and remote commands are recorded in order of start, failures marked', async () => {
  const lines: string[] = [];
  const log = new Log((l) => lines.push(l));
  await log.group('Switch', async () => {
    await log.timed({ kind: 'remote', what: 'switching to r1', host: 'h1' }, () => Promise.resolve());
    await log
      .timed({ kind: 'remote', what: 'health check', host: 'h1' }, () => Promise.reject(new Error('x')))
      .catch(() => undefined);
  });
  expect(log.timeline.map((e) => [e.kind, e.what, e.ok])).toEqual([
    ['stage', 'Switch', true],
    ['remote', 'switching to r1', true],
    ['remote', 'health check', false],
  ]);
  const printed = log.timelineLines();
  expect(printed[0]).toMatch(/^\+\d+\.\d{3}s +\d+\.\d{3}s {2}▶ Switch$/);
  expect(printed[1]).toMatch(/\[h1\] switching to r1$/);
  expect(printed[2]).toMatch(/\[h1\] health check \(failed\)$/);
  expect(log.stagesSummary()).toMatch(/^\*\*Stages:\*\* Switch \d+\.\d\d s$/);
});

test('the timeline never carries a secret, and prints as one collapsed group on GitHub', async () => {
  const before = process.env.GITHUB_ACTIONS;
  process.env.GITHUB_ACTIONS = 'true';
  const lines: string[] = [];
  try {
    const log = new Log((l) => lines.push(l));
    log.secret('hunter22');
    await log.timed({ kind: 'remote', what: 'reading hunter22', host: 'h' }, () => Promise.resolve());
    log.printTimeline();
  } finally {
    if (before === undefined) delete process.env.GITHUB_ACTIONS;
    else process.env.GITHUB_ACTIONS = before;
  }
  expect(lines[0]).toBe('::group::Timeline');
  expect(lines.at(-1)).toBe('::endgroup::');
  expect(lines.join('\n')).not.toContain('hunter22');
  expect(lines.join('\n')).toContain('[h] reading ***');
});
