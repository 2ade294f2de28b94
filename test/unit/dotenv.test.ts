// The env input as systemd's EnvironmentFile= reads it (src/basic/env-file.c):
// the values parseEnvText returns are what the process gets (masked exactly),
// and what systemd would read other than meant is refused by line, never
// quoting the text. test/e2e/env.test.ts checks the same values on a host.
import { parseEnvText } from '../../src/inputs/dotenv.js';
import { InputError, parseInputs } from '../../src/inputs/parse.js';
import { base, raw } from '../support/provision.js';

const values = (text: string) => {
  const r = parseEnvText(text);
  if ('error' in r) throw new Error(r.error);
  return r.values;
};

test.each([
  ['A=plain', 'plain'],
  ['A = spaced around =  ', 'spaced around ='],
  ['A=\'a#b "q" \\n $X `c`\'', 'a#b "q" \\n $X `c`'],
  ['A="it\'s \\"q\\" \\\\ \\$X \\`c\\` #x"', 'it\'s "q" \\ $X `c` #x'],
  ["A='two\n  lines '", 'two\n  lines '],
  ['A="two\nlines"  ', 'two\nlines'],
  ['A=unicodé ✓ =x', 'unicodé ✓ =x'],
  ['A=', ''],
  ["A=''", ''],
  ['A=a\'b"c', 'a\'b"c'],
  ['A="\\d+\\.\\s"', '\\d+\\.\\s'],
  ['A=1\nA=2', '2'],
  ['  # comment\n; comment\nA=x', 'x'],
])('%j reads as systemd does', (text, value) => {
  expect(values(text).A).toBe(value);
});

test.each([
  ['export A=1', 2, /starts with export, which makes systemd ignore the whole line/],
  ['A=`echo x`', 2, /backquotes, which systemd keeps/],
  ['A=one \\\ntwo', 2, /backslash outside quotes/],
  ['A=C:\\dir', 2, /backslash outside quotes/],
  ['A="one \\\ntwo"', 2, /a backslash ends a line in double quotes/],
  ['A="a\\nb"', 2, /backslash in double quotes before one of/],
  [`A="it\\'s"`, 2, /backslash in double quotes before one of/],
  ['A=a#b', 2, /a # in an unquoted value/],
  ['A=a #b', 2, /a # in an unquoted value/],
  ['A="x" # note', 2, /text after the closing quote/],
  ["A='x'y", 2, /text after the closing quote/],
  ['# a comment \\\nA=1', 2, /a comment ends in a backslash/],
  ['A="open\nstill open', 2, /never closed/],
  ['\u00a0A=1', 2, /not a key/],
])('%j is refused, naming the line', (text, line, why) => {
  const r = parseEnvText(`OK=1\n${text}\n`);
  expect(r).toEqual({ error: expect.stringMatching(new RegExp(`^line ${line}: `)) });
  expect((r as { error: string }).error).toMatch(why);
});

test('the message names the input and the line, never the text', () => {
  const secret = 'export DATABASE_URL=postgresql://u:pw-s3cret@h/db';
  try {
    parseInputs('provision', raw({ ...base, env: `A=1\n${secret}\n` }));
    throw new Error('accepted');
  } catch (err) {
    expect(err).toBeInstanceOf(InputError);
    const message = (err as Error).message;
    expect(message).toMatch(/^Input 'env': line 2: starts with export, .*; expected KEY=value lines/);
    const value = secret.slice('export '.length);
    for (let i = 0; i + 6 <= value.length; i++) expect(message).not.toContain(value.slice(i, i + 6));
  }
});
