// Turns raw string inputs into one typed, validated settings object, or throws an
// InputError that lists every problem. Nothing else in the code reads raw inputs.

import type { Field, SettingsOf } from './fields.js';
import { actions, checkSettings, type ActionName } from './actions.js';

export class InputError extends Error {
  constructor(
    readonly problems: string[],
    /** What the problems are of, after their count: "inputs are invalid" unless told. */
    of = 'inputs are invalid',
  ) {
    super(problems.length === 1 ? problems[0] : `${problems.length} ${of}:\n- ${problems.join('\n- ')}`);
    this.name = 'InputError';
  }
}

export type { SettingsOf };
export type Settings<A extends ActionName> = SettingsOf<(typeof actions)[A]['inputs']>;

/**
 * Reads a raw input by name; undefined when it is not set at all (then it takes
 * its default, as the runner gives an input left out of `with:`).
 */
export type RawInputs = (name: string) => string | undefined;

/** Where values came from, when not all from inputs (src/inputs/config-file.ts), for messages. */
export interface InputOrigin {
  /** How a message names the value of an input the config file gave (file, line and key); undefined: the input. */
  where(name: string): string | undefined;
  /** Added to "is required" messages: where else the value may be given. */
  missingHint: string;
}

/** Values of secret inputs, so the caller can mask them before anything is logged. */
export function secretValues(action: ActionName, raw: RawInputs): string[] {
  const inputs = actions[action].inputs as Record<string, Field>;
  return Object.entries(inputs)
    .filter(([, f]) => f.secret)
    .map(([name]) => raw(name) ?? '')
    .filter((v) => v.length > 0);
}

/**
 * A raw value with its ends trimmed, as GitHub's core.getInput does (a YAML block
 * scalar gives "30\n"). A multi-line input keeps its leading line breaks, so line
 * numbers in messages stay those of the text as written (its parsers skip blank lines).
 */
export function trimInput(value: string, multiline = false): string {
  return multiline ? value.trimEnd().replace(/^[^\S\n]+/, '') : value.trim();
}

/**
 * Whether a message quotes any 8 characters of a secret. The builders of secret
 * fields never quote the value; this is the net under them, should one ever do.
 */
function quotesSecret(message: string, secret: string): boolean {
  // PEM armour lines are format, not secret, and messages about keys name them.
  const material = secret.replace(/-----(BEGIN|END) [A-Z0-9 ]+-----/g, '\n');
  for (let i = 0; i + 8 <= message.length; i++) if (material.includes(message.slice(i, i + 8))) return true;
  return false;
}

export function parseInputs<A extends ActionName>(
  action: A,
  raw: RawInputs,
  origin?: InputOrigin,
): Settings<A> {
  const inputs = actions[action].inputs as Record<string, Field>;
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  const appRaw = (raw('app') ?? '').trim();
  const appValid = inputs.app ? inputs.app.schema.safeParse(appRaw).success : true;
  for (const [name, f] of Object.entries(inputs)) {
    const given = raw(name);
    let value = trimInput(given ?? '', f.multiline);
    if (value === '' && f.default !== undefined && !(f.emptyIsValue && given !== undefined))
      value = f.default;
    const label = origin?.where(name) ?? `Input '${name}'`;
    if (value === '' && f.required) {
      problems.push(`${label} is required: expected ${f.expected}${origin?.missingHint ?? ''}.`);
      continue;
    }
    // {app} is a placeholder of settings, never of a secret (a password may hold the text).
    if (value.includes('{app}') && name !== 'app' && !f.secret) {
      // A value derived from an invalid app name would only repeat the app's error.
      if (!appValid) continue;
      value = value.replaceAll('{app}', appRaw);
    }
    const r = f.schema.safeParse(value);
    if (!r.success) {
      let why = r.error.issues[0]?.message ?? 'is not valid';
      if (f.secret && (!f.revealErrors || quotesSecret(why, value)))
        why = 'is not valid (the reason is withheld: the input is a secret)';
      problems.push(`${label}: ${why}; expected ${f.expected}.`);
      continue;
    }
    out[name] = r.data;
  }
  // Inputs that must agree with each other, checked on the typed settings.
  const settings = out as Settings<A>;
  if (problems.length === 0) problems.push(...checkSettings(action, settings));
  if (problems.length) throw new InputError(problems);
  return out as Settings<A>;
}
