// Renders each action's action.yml from the input and output definitions, so
// metadata, code and tests cannot drift apart. `npm run gen` writes them; a test
// checks the committed files match.

import { stringify } from 'yaml';
import { actions, type ActionName } from '../inputs/actions.js';
import type { Field } from '../inputs/fields.js';

/** Where each action.yml lives and the bundle it runs, relative to that file. */
export const ACTION_FILES: Record<ActionName, { path: string; main: string }> = {
  deploy: { path: 'action.yml', main: 'dist/deploy/index.js' },
  release: { path: 'actions/release/action.yml', main: '../../dist/release/index.js' },
  switch: { path: 'actions/switch/action.yml', main: '../../dist/switch/index.js' },
  verify: { path: 'actions/verify/action.yml', main: '../../dist/verify/index.js' },
  rollback: { path: 'actions/rollback/action.yml', main: '../../dist/rollback/index.js' },
  migrate: { path: 'actions/migrate/action.yml', main: '../../dist/migrate/index.js' },
  'backup-verify': { path: 'actions/backup-verify/action.yml', main: '../../dist/backup-verify/index.js' },
  provision: { path: 'actions/provision/action.yml', main: '../../dist/provision/index.js' },
  status: { path: 'actions/status/action.yml', main: '../../dist/status/index.js' },
  lock: { path: 'actions/lock/action.yml', main: '../../dist/lock/index.js' },
  unlock: { path: 'actions/unlock/action.yml', main: '../../dist/unlock/index.js' },
};

export function renderActionYml(name: ActionName): string {
  const def = actions[name];
  const inputs: Record<string, Record<string, unknown>> = {};
  for (const [input, f] of Object.entries(def.inputs as Record<string, Field>)) {
    // Defaults are applied in code, not by the runner, so that an input left out
    // is told from one given and the config file fills only those left out
    // (src/inputs/config-file.ts). An input whose empty value means something of
    // its own keeps its default here: the runner then passes '' only when given;
    // so does one only the runner can evaluate.
    const inFile = !f.secret && !f.notInConfig;
    const shownDefault =
      f.default && !f.emptyIsValue && !f.runnerDefault && !/Default\b/.test(f.description)
        ? ` Default: ${f.default.replace(/\n/g, ', ')}.`
        : '';
    inputs[input] = {
      description:
        f.description +
        shownDefault +
        (f.required && inFile ? ' Required, here or in the config file.' : '') +
        (f.secret ? ' Treated as a secret: masked in logs.' : ''),
      // The runner does not enforce it; linters do, and the config file may give it.
      required: f.required === true && !inFile,
      ...((f.emptyIsValue || f.runnerDefault) && f.default ? { default: f.default } : {}),
    };
  }
  const doc = {
    name: def.title,
    description: def.description,
    author: 'metalship',
    branding: { icon: 'server', color: 'gray-dark' },
    inputs,
    outputs: def.outputs,
    runs: { using: 'node24', main: ACTION_FILES[name].main },
  };
  return `# Generated from src/inputs/definitions.ts by 'npm run gen': edit that file, not this one.\n${stringify(doc, { lineWidth: 0 })}`;
}

/** docs/reference.md: every action's inputs and outputs, from the same definitions. */
export function renderReference(): string {
  const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const parts = [
    '# Reference: every input and output',
    '',
    "Generated from `src/inputs/` by `npm run gen`; a test checks it matches. Each action's `action.yml` carries the same text.",
    '',
    'Each input may also be set in the config file (`.metalship.yml`, see the README, "Config file"), except the secrets and those marked "not in the config file"; an input given in `with:` overrides it. A required input is required in one or the other.',
  ];
  for (const name of Object.keys(ACTION_FILES) as ActionName[]) {
    const def = actions[name];
    const uses = name === 'deploy' ? 'metalship/metalship@v1' : `metalship/metalship/actions/${name}@v1`;
    parts.push(
      '',
      `## ${name}`,
      '',
      `\`uses: ${uses}\`. ${def.description}`,
      '',
      '| input | required | default | description |',
      '|---|---|---|---|',
    );
    for (const [input, f] of Object.entries(def.inputs as Record<string, Field>)) {
      parts.push(
        `| \`${input}\` | ${f.required ? 'yes' : ''} | ${f.default ? `\`${cell(f.default)}\`` : ''} | ${cell(f.description)}${f.secret ? ' (secret)' : ''}${f.notInConfig && !f.secret ? ` Not in the config file: ${cell(f.notInConfig)}.` : ''} Expected: ${cell(f.expected)}. |`,
      );
    }
    parts.push('', '| output | description |', '|---|---|');
    for (const [output, o] of Object.entries(def.outputs as Record<string, { description: string }>))
      parts.push(`| \`${output}\` | ${cell(o.description)} |`);
  }
  return parts.join('\n') + '\n';
}
