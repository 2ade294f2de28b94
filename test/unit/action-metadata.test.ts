// The action.yml files are generated from src/inputs: they must match, run on
// node24, describe every input and output, and point at a bundle that exists.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { ACTION_NAMES, actions } from '../../src/inputs/actions.js';
import { ACTION_FILES, renderActionYml, renderReference } from '../../src/meta/action-yml.js';

describe.each(ACTION_NAMES)('%s action.yml', (name) => {
  const file = ACTION_FILES[name].path;
  const text = readFileSync(file, 'utf8');
  const doc = parse(text) as {
    name: string;
    description: string;
    inputs: Record<string, { description: string; required: boolean }>;
    outputs: Record<string, { description: string }>;
    runs: { using: string; main: string };
  };

  test('is what npm run gen writes', () => expect(text).toBe(renderActionYml(name)));
  test('runs its own bundle on node24', () => {
    expect(doc.runs.using).toBe('node24');
    expect(existsSync(path.join(path.dirname(file), doc.runs.main))).toBe(true);
  });
  test('describes every input and output', () => {
    expect(doc.name).toBeTruthy();
    expect(doc.description).toBeTruthy();
    for (const [input, def] of Object.entries(doc.inputs)) {
      expect([input, def.description.length > 10]).toEqual([input, true]);
      expect(typeof def.required).toBe('boolean');
    }
    for (const [output, def] of Object.entries(doc.outputs))
      expect([output, def.description.length > 10]).toEqual([output, true]);
  });
});

test('docs/reference.md is what npm run gen writes', () => {
  expect(readFileSync('docs/reference.md', 'utf8')).toBe(renderReference());
});

// The example workflows call our actions by their published name; actionlint
// cannot see those inputs, so check every `with:` key against the definitions.
test.each(readdirSync('examples/workflows').filter((f) => f.endsWith('.yml')))(
  'examples/workflows/%s passes only inputs the actions have',
  (file) => {
    const doc = parse(readFileSync(path.join('examples/workflows', file), 'utf8')) as {
      jobs: Record<string, { steps?: { uses?: string; with?: Record<string, unknown> }[] }>;
    };
    const used: string[] = [];
    for (const job of Object.values(doc.jobs))
      for (const step of job.steps ?? []) {
        const match = /^metalship\/metalship(?:\/actions\/([a-z-]+))?@/.exec(step.uses ?? '');
        if (!match) continue;
        const action = (match[1] ?? 'deploy') as keyof typeof actions;
        expect(ACTION_NAMES).toContain(action);
        for (const key of Object.keys(step.with ?? {})) {
          used.push(key);
          expect([action, key, key in actions[action].inputs]).toEqual([action, key, true]);
        }
      }
    expect(used.length).toBeGreaterThan(0);
  },
);
