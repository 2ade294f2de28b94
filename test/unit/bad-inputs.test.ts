// Bad and hostile input across the actions: each is refused before any host is
// contacted, with a message naming the input, the problem and what is expected.
// (test/e2e/foundation.test.ts shows, through the real bundle, that the host is untouched.)
import { InputError, parseInputs } from '../../src/inputs/parse.js';

import { BAD_INPUTS, BASE } from '../support/bad-inputs.js';

test.each(BAD_INPUTS)('%s: %s = %j is refused', (action, input, value, message) => {
  let problems: string[] = [];
  try {
    parseInputs(action, (name) => (name === input ? value : ((BASE as Record<string, string>)[name] ?? '')));
  } catch (err) {
    expect(err).toBeInstanceOf(InputError);
    problems = (err as InputError).problems;
  }
  const mine = problems.filter((p) => p.startsWith(`Input '${input}'`));
  expect(mine.length).toBeGreaterThan(0);
  expect(mine.join('\n')).toMatch(message);
  // Every message says what is expected.
  for (const p of mine) expect(p).toMatch(/expected /);
});

test('the suite covers at least 40 cases over several actions', () => {
  expect(BAD_INPUTS.length).toBeGreaterThanOrEqual(40);
  expect(new Set(BAD_INPUTS.map(([a]) => a)).size).toBeGreaterThanOrEqual(7);
});
