// What hosts print reaches the job log as text: a runner never reads it as a
// workflow command (a `##[...]` anywhere in a line, or `::...::` at its start).
import { Log } from '../../src/log.js';

function onGitHub(fn: (log: Log) => void): string[] {
  const before = process.env.GITHUB_ACTIONS;
  process.env.GITHUB_ACTIONS = 'true';
  const lines: string[] = [];
  try {
    fn(new Log((l) => lines.push(l)));
  } finally {
    if (before === undefined) delete process.env.GITHUB_ACTIONS;
    else process.env.GITHUB_ACTIONS = before;
  }
  return lines;
}

test.each([
  '[10.0.0.5] ##[set-output name=release-id;]evil',
  '[10.0.0.5] pip says ##[add-mask]x and more',
  '::set-output name=healthy::true',
  '   ::warning::spoofed',
  '\u0085\u00a0::set-output name=healthy::true',
  '[10.0.0.5] import-time\r::set-output name=release-id::pwned',
])('%j is written with command processing stopped, then resumed', (text) => {
  const lines = onGitHub((log) => log.info(`ok line\n${text}`));
  const token = /^::stop-commands::([0-9a-f]{32})$/.exec(lines[0]!)?.[1];
  expect(token).toBeDefined();
  // Every line the runner would see (it splits at \r too) is inside.
  expect(lines.slice(1, -1)).toEqual(['ok line', ...text.split('\r')]);
  expect(lines.at(-1)).toBe(`::${token}::`);
  // A fresh token every time: output cannot resume commands by guessing it.
  const again = onGitHub((log) => log.info(text));
  expect(again[0]).not.toBe(lines[0]);
});

test('ordinary lines are written as they are', () => {
  expect(onGitHub((log) => log.info('[10.0.0.5] 11 files verified\nimport ok: main:app'))).toEqual([
    '[10.0.0.5] 11 files verified',
    'import ok: main:app',
  ]);
});

test.each([
  'restoring shop-2026.dump\r::error::spoofed',
  'migrating down to ##[set-output name=release-id;]evil',
  'revision abc\n::add-mask::x\u2028::warning::y',
])('a group named from host text %j stays one line with no command in it', async (name) => {
  const before = process.env.GITHUB_ACTIONS;
  process.env.GITHUB_ACTIONS = 'true';
  const lines: string[] = [];
  try {
    await new Log((l) => lines.push(l)).group(name, () => Promise.resolve());
  } finally {
    if (before === undefined) delete process.env.GITHUB_ACTIONS;
    else process.env.GITHUB_ACTIONS = before;
  }
  expect(lines).toHaveLength(2);
  expect(lines[0]).toMatch(/^::group::[^\r\n\u2028]*$/);
  expect(lines[0]).not.toContain('##[');
  expect(lines[0]!.slice('::group::'.length)).not.toMatch(/^\s*::/);
  expect(lines[1]).toBe('::endgroup::');
});

describe('text from a host in the job summary', () => {
  test('a code block whose fence no backtick run inside can close, and table cells with markdown and HTML escaped', async () => {
    const { codeBlock, cellText } = await import('../../src/actions/run.js');
    const journal = 'JOURNAL x ```\n![img](https://x/y.png) <b>bold</b> ``````';
    const block = codeBlock(journal);
    expect(block.startsWith('```````text\n')).toBe(true);
    expect(block.endsWith('\n```````')).toBe(true);
    expect(block).toContain(journal);
    // Many runs: counted without a spread (which overflowed the stack).
    const many = '`a'.repeat(200000);
    expect(codeBlock(many).startsWith('```text\n`a')).toBe(true);
    // A cell: one line (a CR ends one too), a code span, pipes escaped.
    expect(cellText('[link](https://x) <img src=x> | b ``c``\r\r# PASSED\nnext')).toBe(
      '``` [link](https://x) <img src=x> \\| b ``c`` ```',
    );
    expect(cellText('')).toBe('');
  });
});
