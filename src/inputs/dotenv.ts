// The dotenv text of an `env` input (provision's shared .env, a release's own):
// validated line by line, every value masked, never quoted in a message. The
// file is read by systemd's EnvironmentFile= (src/basic/env-file.c), so the
// values are parsed as systemd parses them; what systemd would read other than
// the user meant, or other readers (python-dotenv, dotenv) differently, is
// refused: `export`, backquotes, a backslash outside double quotes (systemd
// drops it, or joins the next line) or in them before what python-dotenv
// reads as an escape (\n), a # in an unquoted value (a comment to
// other readers, text to systemd), text after a closing quote (systemd appends
// it).

import { custom } from './fields.js';

/** A dotenv key: letters, digits and _, not starting with a digit. */
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A key that names a secret: its value is masked, so it must be long enough to mask. */
const SECRET_KEY = /PASS|SECRET|TOKEN|KEY|CREDENTIAL|AUTH/i;
/** Log.secret masks values of at least this length only (masking "1" would wreck the log). */
const MASKABLE = 3;
/** systemd's whitespace in an environment file (not JavaScript's trim(): no-break spaces are text to it). */
const BLANK = /^[ \t]*$/;
/** In double quotes, systemd takes a backslash before one of these as an escape (SHELL_NEED_ESCAPE). */
const ESCAPABLE = '"\\`$';
/** After a backslash in double quotes, python-dotenv (and dotenv, for n and r) reads an escape where systemd keeps both. */
const READ_OTHERWISE = "'abfnrtv";

export interface DotenvText {
  /** The text written to .env (line endings normalised, ending in a newline); '' when not given. */
  text: string;
  /** The values as systemd reads them (masked in logs, each of them). */
  values: Record<string, string>;
}

/**
 * Validates dotenv text line by line (quoted values may span lines) and reads
 * its values as systemd does. Errors name the line and the problem, never a key
 * or a value: the whole text is a secret, and a line that is not KEY=value may
 * well be a value.
 */
export function parseEnvText(v: string): DotenvText | { error: string } {
  const normalised = v.replace(/\r\n?/g, '\n');
  if (BLANK.test(normalised.replaceAll('\n', ''))) return { text: '', values: {} };
  const lines = normalised.split('\n');
  const values: Record<string, string> = {};
  /** The line each key is last set on (the value systemd keeps). */
  const lineOf = new Map<string, number>();
  const fail = (i: number, problem: string) => ({ error: `line ${i + 1}: ${problem}` });
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/^[ \t]+/, '');
    if (BLANK.test(line)) continue;
    if (line.startsWith('#') || line.startsWith(';')) {
      // systemd before 254 takes the line after such a comment as comment too.
      if (line.replace(/[ \t]+$/, '').endsWith('\\'))
        return fail(
          i,
          'a comment ends in a backslash, which makes the next line a comment for systemd before 254; end the comment without one',
        );
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) return { error: `line ${i + 1} is not KEY=value` };
    const start = i;
    const key = line.slice(0, eq).replace(/[ \t]+$/, '');
    if (/^export[ \t]/.test(key))
      return fail(i, 'starts with export, which makes systemd ignore the whole line; drop the export');
    if (!ENV_KEY.test(key))
      return fail(
        i,
        'the text before the first = is not a key (letters, digits and _, not starting with a digit)',
      );
    const rest = line.slice(eq + 1).replace(/^[ \t]+/, '');
    const quote = rest[0];
    let value = '';
    if (quote === '`')
      return fail(
        i,
        'the value is in backquotes, which systemd keeps as part of it; use single or double quotes',
      );
    if (quote === '"' || quote === "'") {
      // A quoted value ends at its closing quote, possibly on a later line.
      let text = rest;
      let k = 1;
      for (;;) {
        if (k >= text.length) {
          if (++i >= lines.length) return fail(start, 'the value opens a quote that is never closed');
          text = lines[i]!;
          k = 0;
          value += '\n';
          continue;
        }
        const c = text[k]!;
        if (c === quote) break;
        if (quote === '"' && c === '\\') {
          const next = text[k + 1];
          if (next === undefined)
            return fail(
              i,
              'a backslash ends a line in double quotes, which joins the next line to it for systemd; put the line break itself in the quotes',
            );
          if (READ_OTHERWISE.includes(next))
            return fail(
              i,
              "a backslash in double quotes before one of ' a b f n r t v, which systemd keeps as two characters and other readers as an escape (\\n a line break); write \\\\ for a backslash, or use single quotes",
            );
          // systemd: \\ \" \$ \` are the character; a backslash before anything else stays.
          value += ESCAPABLE.includes(next) ? next : c + next;
          k += 2;
          continue;
        }
        value += c;
        k++;
      }
      if (!BLANK.test(text.slice(k + 1)))
        return fail(
          i,
          'text after the closing quote, which systemd appends to the value (a # there is no comment); remove it or move it into the quotes',
        );
    } else {
      if (rest.includes('\\'))
        return fail(
          i,
          'a backslash outside quotes, which systemd drops (or, at the end, joins the next line); put the value in single quotes',
        );
      if (rest.includes('#'))
        return fail(
          i,
          'a # in an unquoted value, which systemd keeps but other readers take as a comment; put the value in single quotes',
        );
      value = rest.replace(/[ \t]+$/, '');
    }
    values[key] = value;
    lineOf.set(key, start + 1);
  }
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
        ' Read as systemd reads an EnvironmentFile: a quoted value may span lines; in double quotes, a backslash before a double quote, a backslash, $ or a backquote makes it literal; nothing is expanded. ' +
        "Refused, naming the line: export, backquotes, a backslash outside double quotes (or in them at a line's end or before ' a b f n r t v), a # in an unquoted value, text after a closing quote (systemd would read them other than meant); put such a value in single quotes. " +
        'Every value is masked in logs, except values shorter than 3 characters, which cannot be: such a value is refused when its key names a secret (contains PASSWORD, PASSWD, PASS, SECRET, TOKEN, KEY, CREDENTIAL or AUTH, in any case), and short values of other keys (PORT=80, DEBUG=1) are not treated as secret.',
      secret: true,
      // parseEnvText's messages name lines, never keys or values.
      revealErrors: true,
      multiline: true,
    },
    {
      expected:
        'KEY=value lines as systemd reads them: keys of letters, digits and _; values plain, in single quotes or in double quotes',
    },
    (v) => parseEnvText(v),
  );
}
