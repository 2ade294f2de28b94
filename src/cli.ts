// `npx metalship <action> --<input> value ...`: the same code the actions run,
// from a terminal. Inputs not given as flags are read from INPUT_* variables.

import { readFileSync } from 'node:fs';
import { actions, ACTION_NAMES, type ActionName } from './inputs/actions.js';
import type { Field } from './inputs/fields.js';

import { envInputs, runAction, type ActionOutcome } from './actions/run.js';
import { release } from './actions/release.js';
import { migrate } from './actions/migrate.js';
import { switchRelease } from './actions/switch.js';
import { verify } from './actions/verify.js';
import { rollback } from './actions/rollback.js';
import { deploy } from './actions/deploy.js';
import { backupVerify } from './actions/backup-verify.js';
import { provision } from './actions/provision.js';
import type { Log } from './log.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const BODIES: Record<ActionName, (settings: any, log: Log) => Promise<ActionOutcome>> = {
  release,
  migrate,
  switch: switchRelease,
  verify,
  rollback,
  deploy,
  'backup-verify': backupVerify,
  provision,
};

export function usage(action?: ActionName): string {
  if (!action) {
    return [
      'usage: metalship <action> [--<input> <value> ...]',
      '',
      'actions:',
      ...ACTION_NAMES.map((a) => `  ${a.padEnd(10)} ${actions[a].description}`),
      '',
      'A value @path reads the file at path (for keys and known_hosts); @@ starts a literal @.',
      'Inputs not given as flags come from INPUT_<NAME> environment variables, as on GitHub.',
      "Run 'metalship <action> --help' for an action's inputs.",
    ].join('\n');
  }
  const def = actions[action];
  const lines = [`usage: metalship ${action} [--<input> <value> ...]`, '', def.description, '', 'inputs:'];
  for (const [name, f] of Object.entries(def.inputs as Record<string, Field>)) {
    const flags = [
      f.required ? 'required' : '',
      f.default ? `default: ${JSON.stringify(f.default)}` : '',
      f.secret ? 'secret' : '',
    ]
      .filter(Boolean)
      .join(', ');
    lines.push(`  --${name}${flags ? ` (${flags})` : ''}`, `      ${f.description}`);
  }
  lines.push('', 'outputs:', ...Object.entries(def.outputs).map(([n, o]) => `  ${n}: ${o.description}`));
  return lines.join('\n');
}

/** Parses `--name value`, `--name=value`; returns the inputs or an error text. */
export function parseArgs(action: ActionName, args: string[]): Record<string, string> | string {
  const known = new Set(Object.keys(actions[action].inputs));
  const values: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith('--')) return `unexpected argument '${arg}' (inputs are given as --name value)`;
    let name = arg.slice(2);
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    } else {
      value = args[++i];
      if (value === undefined) return `--${name} needs a value`;
    }
    if (!known.has(name)) return `unknown input --${name} for ${action} (see metalship ${action} --help)`;
    if (value.startsWith('@@')) value = value.slice(1);
    else if (value.startsWith('@')) {
      try {
        value = readFileSync(value.slice(1), 'utf8');
      } catch {
        return `--${name}: cannot read the file ${value.slice(1)}`;
      }
    }
    values[name] = value;
  }
  return values;
}

export async function main(argv: string[]): Promise<number> {
  const [action, ...rest] = argv;
  if (!action || action === '--help' || action === '-h' || action === 'help') {
    process.stdout.write(usage() + '\n');
    return action ? 0 : 2;
  }
  if (!(ACTION_NAMES as string[]).includes(action)) {
    process.stderr.write(`unknown action '${action}'\n\n${usage()}\n`);
    return 2;
  }
  const name = action as ActionName;
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(usage(name) + '\n');
    return 0;
  }
  const parsed = parseArgs(name, rest);
  if (typeof parsed === 'string') {
    process.stderr.write(`error: ${parsed}\n`);
    return 2;
  }
  const env = envInputs();
  const raw = (input: string) => parsed[input] ?? env(input);
  const result = await runAction(name, BODIES[name], raw);
  for (const [k, v] of Object.entries(result.outputs))
    if (k !== 'results') process.stdout.write(`${k}=${v}\n`);
  return result.ok ? 0 : 1;
}
