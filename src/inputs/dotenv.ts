// The dotenv text of an `env` input (provision's shared .env, a release's own):
// validated line by line, every value masked, never quoted in a message.

import { parse as parseDotenv } from 'dotenv';
import { custom } from './fields.js';

/** A dotenv key: letters, digits and _, not starting with a digit. */
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A key that names a secret: its value is masked, so it must be long enough to mask. */
const SECRET_KEY = /PASS|SECRET|TOKEN|KEY|CREDENTIAL|AUTH/i;
/** Log.secret masks values of at least this length only (masking "1" would wreck the log). */
const MASKABLE = 3;

export interface DotenvText {
  /** The text written to .env (line endings normalised, ending in a newline); '' when not given. */
  text: string;
  /** The parsed values (masked in logs, each of them). */
  values: Record<string, string>;
}

/** Whether a line of a quoted value holds its closing quote (in double quotes, not one escaped by a backslash). */
function closesQuote(text: string, quote: string): boolean {
  for (let k = 0; k < text.length; k++) {
    if (quote === '"' && text[k] === '\\') k++;
    else if (text[k] === quote) return true;
  }
  return false;
}

/**
 * Validates dotenv text line by line (quoted values may span lines). Errors name
 * the line and the problem, never a key or a value: the whole text is a secret,
 * and a line that is not KEY=value may well be a value.
 */
export function parseEnvText(v: string): DotenvText | { error: string } {
  const normalised = v.replace(/\r\n?/g, '\n');
  if (!normalised.trim()) return { text: '', values: {} };
  const lines = normalised.split('\n');
  /** The line each key is last set on (the value dotenv keeps). */
  const lineOf = new Map<string, number>();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) return { error: `line ${i + 1} is not KEY=value` };
    const key = line
      .slice(0, eq)
      .trim()
      .replace(/^export\s+/, '');
    if (!ENV_KEY.test(key)) {
      return {
        error: `line ${i + 1}: the text before the first = is not a key (letters, digits and _, not starting with a digit)`,
      };
    }
    lineOf.set(key, i + 1);
    const value = line.slice(eq + 1).trimStart();
    const quote = value[0];
    if (quote === '"' || quote === "'" || quote === '`') {
      // A quoted value ends at its closing quote, possibly on a later line. In
      // double quotes a backslash escapes the next character (\" is no end).
      let j = i;
      let rest = value.slice(1);
      while (!closesQuote(rest, quote)) {
        j++;
        if (j >= lines.length)
          return { error: `line ${i + 1}: the value opens a quote that is never closed` };
        rest = lines[j]!;
      }
      i = j;
    }
  }
  const values = parseDotenv(normalised);
  for (const [key, value] of Object.entries(values)) {
    if (value.length > 0 && value.length < MASKABLE && SECRET_KEY.test(key))
      return {
        error: `line ${lineOf.get(key) ?? '?'}: the key names a secret but its value is shorter than ${MASKABLE} characters, too short to be masked in logs`,
      };
  }
  return { text: normalised.endsWith('\n') ? normalised : normalised + '\n', values };
}

/** An `env` input: dotenv text, a secret whose every value is masked. */
export function envField(description: string) {
  return custom<DotenvText>(
    {
      description:
        description +
        ' A quoted value may span lines; in double quotes, a backslash before a double quote, a backslash, $ or a backquote makes it literal; nothing is expanded. ' +
        'Every value is masked in logs, except values shorter than 3 characters, which cannot be: such a value is refused when its key names a secret (contains PASSWORD, PASSWD, PASS, SECRET, TOKEN, KEY, CREDENTIAL or AUTH, in any case), and short values of other keys (PORT=80, DEBUG=1) are not treated as secret.',
      secret: true,
      // parseEnvText's messages name lines, never keys or values.
      revealErrors: true,
      multiline: true,
    },
    { expected: 'KEY=value lines, keys of letters, digits and _' },
    (v) => parseEnvText(v),
  );
}
