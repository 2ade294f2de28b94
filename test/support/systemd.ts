// How systemd reads a unit file, modelled closely enough to assert what a
// generated unit means: sections, key=value lines, comments and line
// continuation (conf-parser.c); then, per setting, specifier resolution (%i,
// %%), word splitting with systemd's quoting and C escapes (extract_first_word
// with EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE), ExecStart='s prefixes and `;`
// separators, and the $VAR / ${VAR} / $$ expansion done when the command runs.
// Where systemd would reject a line, or where its meaning would depend on the
// systemd version, these functions throw.

export interface UnitEntry {
  section: string;
  key: string;
  /** The value as systemd hands it to the setting's parser: continuation joined, trimmed. */
  value: string;
}

/** The settings of a unit file, in order (a key may repeat). */
export function parseUnit(text: string): UnitEntry[] {
  const entries: UnitEntry[] = [];
  let section = '';
  let continued: string | null = null;
  text.split('\n').forEach((raw, i) => {
    if (continued !== null && /^\s*[#;]/.test(raw)) return; // comments inside a continuation are dropped
    const line = (continued ?? '') + raw;
    if (continued === null && /^\s*([#;]|$)/.test(line)) return;
    const trailing = /\\+$/.exec(line)?.[0].length ?? 0;
    if (trailing % 2 === 1) {
      continued = line.slice(0, -1) + ' ';
      return;
    }
    continued = null;
    const t = line.trim();
    if (t.startsWith('[')) {
      if (!/^\[[^\]]+\]$/.test(t)) throw new Error(`line ${i + 1}: bad section header ${JSON.stringify(t)}`);
      section = t.slice(1, -1);
      return;
    }
    const eq = t.indexOf('=');
    if (eq <= 0) throw new Error(`line ${i + 1}: not key=value: ${JSON.stringify(t)}`);
    if (!section) throw new Error(`line ${i + 1}: a setting outside any section`);
    entries.push({ section, key: t.slice(0, eq).trim(), value: t.slice(eq + 1).trim() });
  });
  if (continued !== null) throw new Error('the file ends inside a line continuation');
  return entries;
}

/** The values of one setting, in order. */
export function values(entries: UnitEntry[], section: string, key: string): string[] {
  return entries.filter((e) => e.section === section && e.key === key).map((e) => e.value);
}

/** The one value of a setting; throws when it is missing or repeated. */
export function value(entries: UnitEntry[], section: string, key: string): string {
  const v = values(entries, section, key);
  if (v.length !== 1) throw new Error(`[${section}] ${key}: ${v.length} values, expected one`);
  return v[0]!;
}

/** Values of the specifiers a unit may use (systemd.unit(5), "Specifiers"): the letter without %. */
export type Specifiers = Record<string, string>;

/** Resolves %x specifiers the way unit_full_printf does; an unknown one is an error there too. */
export function resolveSpecifiers(text: string, spec: Specifiers): string {
  return text.replace(/%(.?)/g, (_m, c: string) => {
    if (c === '%') return '%';
    const v = spec[c];
    if (v === undefined) throw new Error(`unknown or unset specifier %${c} in ${JSON.stringify(text)}`);
    return v;
  });
}

const SIMPLE_ESCAPES: Record<string, string> = {
  a: '\x07',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
  v: '\v',
  '\\': '\\',
  '"': '"',
  "'": "'",
  s: ' ',
};

/** One C escape after a backslash (cunescape_one): [the character, chars consumed]. */
function cunescapeOne(text: string, at: number): [string, number] {
  const c = text[at];
  if (c === undefined) throw new Error(`a backslash ends ${JSON.stringify(text)}`);
  if (SIMPLE_ESCAPES[c] !== undefined) return [SIMPLE_ESCAPES[c], 1];
  const hex = /^x([0-9a-fA-F]{2})/.exec(text.slice(at));
  if (hex) return [String.fromCharCode(parseInt(hex[1]!, 16)), 3];
  const oct = /^[0-7]{3}/.exec(text.slice(at));
  if (oct && oct[0] !== '000') return [String.fromCharCode(parseInt(oct[0], 8)), 3];
  throw new Error(`unknown escape \\${c} in ${JSON.stringify(text)}`);
}

interface Word {
  word: string;
  /** The word as written, to tell an unquoted `;` from a quoted one. */
  source: string;
}

const WHITESPACE = ' \t\n\r';

/** Splits like extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE): quotes may open anywhere in a word. */
function words(text: string): Word[] {
  const out: Word[] = [];
  let i = 0;
  for (;;) {
    while (i < text.length && WHITESPACE.includes(text[i]!)) i++;
    if (i >= text.length) return out;
    const start = i;
    let word = '';
    let quote: string | null = null;
    for (; i < text.length; i++) {
      const c = text[i]!;
      if (c === '\\') {
        const [ch, used] = cunescapeOne(text, i + 1);
        word += ch;
        i += used;
      } else if (quote) {
        if (c === quote) quote = null;
        else word += c;
      } else if (c === '"' || c === "'") {
        quote = c;
      } else if (WHITESPACE.includes(c)) {
        break;
      } else {
        word += c;
      }
    }
    if (quote) throw new Error(`unbalanced ${quote} in ${JSON.stringify(text)}`);
    out.push({ word, source: text.slice(start, i) });
  }
}

/** A list setting (ReadWritePaths=, RuntimeDirectory=, WantedBy=...): its words, specifiers resolved. */
export function listValue(text: string, spec: Specifiers): string[] {
  return words(text).map((w) => resolveSpecifiers(w.word, spec));
}

/** Environment=: the assignments, quotes and escapes removed, specifiers resolved (no $ expansion). */
export function environmentValue(text: string, spec: Specifiers): Record<string, string> {
  const env: Record<string, string> = {};
  for (const w of listValue(text, spec)) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=([\s\S]*)$/.exec(w);
    if (!m) throw new Error(`Environment=: ${JSON.stringify(w)} is not NAME=value`);
    env[m[1]!] = m[2]!;
  }
  return env;
}

export interface ExecCommand {
  /** Prefix characters of the first word (-, @, :, +, !): none in what we generate. */
  prefixes: string;
  argv: string[];
}

/**
 * ExecStart= and friends: the commands of one line, as the argv systemd runs
 * (argv[0] is the program), after specifiers and the environment expansion at
 * exec time. A variable in env that is not set is an error here (systemd would
 * silently drop it), and so is `$name` inside a word, whose meaning differs
 * between systemd versions.
 */
export function execValue(text: string, spec: Specifiers, env: Record<string, string> = {}): ExecCommand[] {
  const commands: ExecCommand[] = [];
  let current: Word[] = [];
  const finish = () => {
    if (current.length === 0) throw new Error(`an empty command in ${JSON.stringify(text)}`);
    const first = current[0]!.word;
    const prefixes = /^[-@:+!|]*/.exec(first)![0];
    const program = resolveSpecifiers(first.slice(prefixes.length), spec);
    if (!program.startsWith('/')) throw new Error(`the program ${JSON.stringify(program)} is not absolute`);
    const args = current.slice(1).map((w) => resolveSpecifiers(w.word, spec));
    const argv = prefixes.includes(':') ? [program, ...args] : expandEnv([program, ...args], env);
    commands.push({ prefixes, argv });
    current = [];
  };
  for (const w of words(text)) {
    if (w.source === ';') finish();
    else current.push(w.source === '\\;' ? { word: ';', source: w.source } : w);
  }
  finish();
  return commands;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function lookup(env: Record<string, string>, name: string): string {
  const v = env[name];
  if (v === undefined) throw new Error(`$${name} is not set`);
  return v;
}

/** replace_env_argv: a word that is just $NAME becomes the value's words; ${NAME} and $$ inside words. */
function expandEnv(argv: string[], env: Record<string, string>): string[] {
  return argv.flatMap((arg) => {
    if (arg.startsWith('$') && NAME.test(arg.slice(1)))
      return words(lookup(env, arg.slice(1))).map((w) => w.word);
    let out = '';
    for (let i = 0; i < arg.length; i++) {
      if (arg[i] !== '$') {
        out += arg[i];
      } else if (arg[i + 1] === '$') {
        out += '$';
        i++;
      } else if (arg[i + 1] === '{') {
        const end = arg.indexOf('}', i);
        if (end < 0) throw new Error(`unclosed \${ in ${JSON.stringify(arg)}`);
        out += lookup(env, arg.slice(i + 2, end));
        i = end;
      } else if (/[A-Za-z_]/.test(arg[i + 1] ?? '')) {
        throw new Error(`$ before a name inside the word ${JSON.stringify(arg)}`);
      } else {
        out += '$';
      }
    }
    return [out];
  });
}
