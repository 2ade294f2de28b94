// `npx metalship <action> --<input> value ...`: the same code the actions run,
// from a terminal. Inputs not given as flags are read from INPUT_* variables.

import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { errorMessage } from './errors.js';
import { actions, ACTION_NAMES, type ActionName } from './inputs/actions.js';
import type { Field } from './inputs/fields.js';
import { suggestion } from './suggest.js';

import { envInputs, runAction, type ActionOutcome } from './actions/run.js';
import { release } from './actions/release.js';
import { migrate } from './actions/migrate.js';
import { switchRelease } from './actions/switch.js';
import { verify } from './actions/verify.js';
import { rollback } from './actions/rollback.js';
import { deploy } from './actions/deploy.js';
import { backupVerify } from './actions/backup-verify.js';
import { provision } from './actions/provision.js';
import { status } from './actions/status.js';
import { lock, unlock } from './actions/lock.js';
import type { Log } from './log.js';

export { didYouMean, editDistance } from './suggest.js';

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
  status,
  lock,
  unlock,
};

export function usage(action?: ActionName): string {
  if (!action) {
    return [
      'usage: metalship <action> [--<input> <value> ...]',
      '       metalship --version',
      '',
      'actions:',
      ...ACTION_NAMES.map((a) => `  ${a.padEnd(10)} ${actions[a].description}`),
      '',
      'A value @path reads the file at path (for keys and known_hosts; @~/ is your home); @@ starts a literal @.',
      'A true-or-false input may be given alone: --migrate is --migrate true, --no-migrate is --migrate false.',
      'Inputs not given as flags come from INPUT_<NAME> environment variables, as on GitHub,',
      'then from the config file: .metalship.yml here, or --config <path>, with --environment <name>.',
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
    lines.push(
      `  --${name}${f.flag ? ` | --no-${name}` : ''}${flags ? ` (${flags})` : ''}`,
      `      ${f.description}`,
    );
  }
  lines.push('', 'outputs:', ...Object.entries(def.outputs).map(([n, o]) => `  ${n}: ${o.description}`));
  return lines.join('\n');
}

/** A value given on the command line: `@path` reads the file (`~/` is the home directory), `@@` a literal @. */
function flagValue(name: string, value: string, secret: boolean): string | { error: string } {
  if (value.startsWith('@@')) return value.slice(1);
  if (!value.startsWith('@')) return value;
  let file = value.slice(1);
  // As a shell expands it: $HOME, else the account's home.
  if (file === '~' || file.startsWith('~/')) file = (process.env.HOME || homedir()) + file.slice(1);
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : (code ?? errorMessage(err));
    // A secret given inline by mistake (a passphrase starting with @) stays out
    // of the message: a secret input's path shows only when it reads as a path.
    const shown = !secret || /^@(\/|~\/|\.\.?\/)/.test(value) ? file : 'given';
    return { error: `--${name}: cannot read the file ${shown} (${why})` };
  }
}

/**
 * Parses `--name value` and `--name=value`; a true-or-false input also takes
 * `--name` alone (true) and `--no-name` (false). Returns the inputs or an error text.
 */
export function parseArgs(action: ActionName, args: string[]): Record<string, string> | string {
  const inputs = actions[action].inputs as Record<string, Field>;
  const names = Object.keys(inputs);
  const flags = names.filter((n) => inputs[n]!.flag);
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
    }
    const negated = !Object.hasOwn(inputs, name) && name.startsWith('no-') && inputs[name.slice(3)]?.flag;
    if (negated) {
      if (value !== undefined) return `--${name} takes no value`;
      name = name.slice(3);
      value = 'false';
    }
    const field = Object.hasOwn(inputs, name) ? inputs[name] : undefined;
    if (!field)
      return `unknown input --${name} for ${action}${suggestion(name, [...names, ...flags.map((f) => `no-${f}`)], '--')} (see metalship ${action} --help)`;
    if (value === undefined) {
      const next = args[i + 1];
      // A flag takes the next word only when it is one of its own values.
      if (field.flag && !(field.words ?? ['true', 'false']).includes(next ?? '')) value = 'true';
      else if (next === undefined) return `--${name} needs a value`;
      else value = args[++i]!;
    }
    const read = flagValue(name, value, field.secret === true);
    if (typeof read !== 'string') return read.error;
    values[name] = read;
  }
  return values;
}

/** The package's version, from the package.json above this module (in src/ or in dist/cli/). */
export function version(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'metalship' && pkg.version) return pkg.version;
    } catch {
      // not this one
    }
  }
  return 'unknown';
}

/** Outputs that are JSON documents: the job's, too long for a terminal line. */
const JSON_OUTPUTS = new Set(['results', 'status']);

export async function main(argv: string[]): Promise<number> {
  const [action, ...rest] = argv;
  if (!action || action === '--help' || action === '-h' || action === 'help') {
    process.stdout.write(usage() + '\n');
    return action ? 0 : 2;
  }
  if (action === '--version' || action === '-V' || action === 'version') {
    process.stdout.write(`metalship ${version()}\n`);
    return 0;
  }
  if (!(ACTION_NAMES as string[]).includes(action)) {
    process.stderr.write(
      `error: unknown action '${action}'${suggestion(action, ACTION_NAMES)}\n\n${usage()}\n`,
    );
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
    if (!JSON_OUTPUTS.has(k)) process.stdout.write(`${k}=${v}\n`);
  return result.ok ? 0 : 1;
}
