// Bad and hostile input across the actions: each is refused before any host is
// contacted, with a message naming the input, the problem and what is expected.
// (test/e2e/foundation.test.ts shows, through the real bundle, that the host is untouched.)
import { ACTION_NAMES } from '../../src/inputs/actions.js';
import { InputError, parseInputs } from '../../src/inputs/parse.js';

import { BAD_INPUT_COMBINATIONS, BAD_INPUTS, BASE } from '../support/bad-inputs.js';

function refuse(
  input: string,
  values: Record<string, string>,
  message: RegExp,
  action: (typeof ACTION_NAMES)[number],
) {
  let problems: string[] = [];
  try {
    parseInputs(action, (name) => values[name]);
  } catch (err) {
    expect(err).toBeInstanceOf(InputError);
    problems = (err as InputError).problems;
  }
  const mine = problems.filter((p) => p.startsWith(`Input '${input}'`));
  expect(mine.length).toBeGreaterThan(0);
  expect(mine.join('\n')).toMatch(message);
  // Every message says what is expected.
  for (const p of mine) expect(p).toMatch(/expected /);
}

test.each(ACTION_NAMES)('BASE is valid for %s, so each case fails only on its own value', (action) => {
  expect(() => parseInputs(action, (name) => (BASE as Record<string, string>)[name])).not.toThrow();
});

test.each(BAD_INPUTS)('%s: %s = %j is refused', (action, input, value, message) => {
  refuse(input, { ...BASE, [input]: value }, message, action);
});

test.each(BAD_INPUT_COMBINATIONS)(
  '%s: %s = %j is refused (with other inputs %j)',
  (action, input, value, message, other) => {
    refuse(input, { ...BASE, ...other, [input]: value }, message, action);
  },
);

test('the suite covers at least 40 cases over several actions', () => {
  expect(BAD_INPUTS.length).toBeGreaterThanOrEqual(40);
  expect(new Set(BAD_INPUTS.map(([a]) => a)).size).toBeGreaterThanOrEqual(7);
});
