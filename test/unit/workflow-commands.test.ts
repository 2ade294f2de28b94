// The workflow commands the actions write, against @actions/core's own output
// (a dev dependency kept as the reference): the same lines, the same output file.
import * as core from '@actions/core';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { commandLine, issue, setOutput } from '../../src/workflow-commands.js';

const VALUES = [
  'plain',
  '',
  '100% done',
  'two\nlines',
  'carriage\rreturn',
  'crlf\r\nend',
  '%0A already escaped',
  '::set-output name=x::y',
  'a: b, c',
  'unicode ✓ \u2028 \u0085',
];

/** What fn writes to stdout. */
function stdout(fn: () => void): string {
  const chunks: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  }) as typeof process.stdout.write;
  try {
    fn();
  } finally {
    process.stdout.write = write;
  }
  return chunks.join('');
}

test.each(VALUES)('%j: warning, notice, error and add-mask lines are those of @actions/core', (value) => {
  expect(stdout(() => issue('warning', value))).toBe(stdout(() => core.warning(value)));
  expect(stdout(() => issue('notice', value))).toBe(stdout(() => core.notice(value)));
  expect(stdout(() => issue('error', value))).toBe(stdout(() => core.error(value)));
  expect(stdout(() => issue('add-mask', value))).toBe(stdout(() => core.setSecret(value)));
  // Whatever the value, the command stays one line.
  expect(commandLine('warning', value)).not.toMatch(/[\r\n]/);
});

describe('step outputs', () => {
  let dir: string;
  const before = process.env.GITHUB_OUTPUT;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'metalship-output-'));
  });
  afterEach(() => {
    if (before === undefined) delete process.env.GITHUB_OUTPUT;
    else process.env.GITHUB_OUTPUT = before;
    rmSync(dir, { recursive: true, force: true });
  });
  /** The output file as written, its random delimiters named by their order. */
  const written = (file: string): string => {
    let n = 0;
    const names = new Map<string, string>();
    return readFileSync(file, 'utf8').replace(/ghadelimiter_[0-9a-f-]{36}/g, (d) => {
      if (!names.has(d)) names.set(d, `DELIMITER${++n}`);
      return names.get(d)!;
    });
  };

  test.each(VALUES)('%j is written to GITHUB_OUTPUT as @actions/core writes it', (value) => {
    const ours = path.join(dir, 'ours');
    const theirs = path.join(dir, 'theirs');
    writeFileSync(ours, '');
    writeFileSync(theirs, '');
    process.env.GITHUB_OUTPUT = ours;
    setOutput('release-id', value);
    setOutput('healthy', 'true');
    process.env.GITHUB_OUTPUT = theirs;
    core.setOutput('release-id', value);
    core.setOutput('healthy', 'true');
    expect(written(ours)).toBe(written(theirs));
    // Each output has a delimiter of its own, unguessable.
    expect(written(ours).match(/DELIMITER\d/g)).toEqual([
      'DELIMITER1',
      'DELIMITER1',
      'DELIMITER2',
      'DELIMITER2',
    ]);
  });

  test('no output file: an error naming it, nothing written elsewhere', () => {
    process.env.GITHUB_OUTPUT = path.join(dir, 'missing');
    expect(() => setOutput('x', 'y')).toThrow(/GITHUB_OUTPUT/);
    delete process.env.GITHUB_OUTPUT;
    expect(() => setOutput('x', 'y')).toThrow(/GITHUB_OUTPUT is not set/);
  });
});
