// Shell script building where quoting is the default: every value interpolated
// into `sh` is single-quoted unless explicitly wrapped in raw().

export class Raw {
  constructor(readonly text: string) {}
}

/** Marks text as already-safe shell (a fragment we built ourselves, never user input). */
export function raw(text: string): Raw {
  return new Raw(text);
}

export type ShValue = string | number | Raw | ReadonlyArray<string | number | Raw>;

/** POSIX single-quote a value: the result is one shell word with the exact bytes of value. */
export function quote(value: string | number): string {
  const text = String(value);
  if (text.includes('\0')) throw new Error('a shell value cannot contain a NUL byte');
  if (text !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(text)) return text;
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

function render(value: ShValue): string {
  if (value instanceof Raw) return value.text;
  if (Array.isArray(value)) return value.map((v) => render(v as string | number | Raw)).join(' ');
  return quote(value as string | number);
}

/** Tagged template: sh`rm -rf ${dir}` quotes dir; sh`${raw('$HOME')}` does not. */
export function sh(strings: TemplateStringsArray, ...values: ShValue[]): string {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    out += render(value) + (strings[i + 1] ?? '');
  });
  return out;
}

/** Joins script fragments into one script, one fragment per line block. */
export function script(...parts: Array<string | false | null | undefined>): string {
  return parts.filter((p): p is string => typeof p === 'string' && p.length > 0).join('\n') + '\n';
}

/**
 * A heredoc that writes content to a file exactly (no expansion); the delimiter
 * is chosen so that it cannot occur in the content.
 */
export function heredoc(content: string): { open: string; body: string } {
  let delimiter = 'METALSHIP_EOF';
  let n = 0;
  while (content.split('\n').includes(delimiter)) delimiter = `METALSHIP_EOF_${++n}`;
  const body = content.endsWith('\n') ? content : content + '\n';
  return { open: `<<'${delimiter}'`, body: `${body}${delimiter}` };
}

/** Script lines that write content to a temporary file beside path, with its mode and owner. */
function stageFile(tmp: string, content: string, opts: { mode?: string; owner?: string }): string[] {
  const doc = heredoc(content);
  return [
    sh`cat > ${tmp} ${raw(doc.open)}`,
    doc.body,
    opts.mode ? sh`chmod ${opts.mode} ${tmp}` : '',
    opts.owner ? sh`chown ${opts.owner} ${tmp}` : '',
  ];
}

/**
 * `name=<exact text>` as a bash assignment through a quoted heredoc: nothing in
 * the text is expanded, and it reads as itself (SQL, a program) in the script.
 * Trailing newlines are dropped, as by any command substitution.
 */
export function textVar(name: string, text: string): string {
  const doc = heredoc(text);
  return `${name}=$(cat ${doc.open}\n${doc.body}\n)`;
}

/**
 * Settings for one of our .sh files: a bash assignment a line, each value
 * quoted (a list becomes an array of quoted words).
 */
export function assignments(values: Record<string, string | number | readonly string[]>): string {
  return Object.entries(values)
    .map(([name, value]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`${name} is not a shell variable name`);
      return typeof value === 'object'
        ? `${name}=(${value.map(quote).join(' ')})`
        : `${name}=${quote(value)}`;
    })
    .join('\n');
}

/**
 * The text of one of our .sh files (src/remote/sh/) as script lines: without its
 * first line, the `#!/bin/bash` that lets shellcheck read the file on its own.
 */
export function shellFile(text: string): string {
  return text.replace(/^#!.*\n/, '').trimEnd();
}

/** Script lines that write content to path atomically (temp file + rename) with mode and owner. */
export function writeFileAtomic(
  path: string,
  content: string,
  opts: { mode?: string; owner?: string } = {},
): string {
  const tmp = `${path}.metalship-tmp`;
  return script(...stageFile(tmp, content, opts), sh`mv -f ${tmp} ${path}`).trimEnd();
}

/**
 * Script lines that write content to path only when it differs, and print
 * "changed <label>" when they did; nothing otherwise. Used for idempotent config.
 */
export function ensureFile(
  path: string,
  content: string,
  opts: { mode?: string; owner?: string; label?: string; onChange?: string } = {},
): string {
  const tmp = `${path}.metalship-new`;
  const doc = heredoc(content);
  // Compared first, from the script itself: an unchanged file costs one process.
  return script(
    sh`if [ -f ${path} ] && cmp -s -- ${path} - ${raw(doc.open)}`,
    doc.body,
    // What an interrupted run left beside it goes (a test, no process, when there is none).
    sh`then if [ -e ${tmp} ]; then rm -f ${tmp}; fi; else`,
    ...stageFile(tmp, content, opts),
    sh`mv -f ${tmp} ${path}; echo ${'changed ' + (opts.label ?? path)}; ${raw(opts.onChange ?? ':')}; fi`,
  ).trimEnd();
}

/**
 * The `KEY value` lines a script printed (its way of reporting): `get` gives
 * the first value of a key, `all` every one, in order; a line that is the key
 * alone has the value ''.
 */
export function keyLines(stdout: string): {
  get(key: string): string | undefined;
  all(key: string): string[];
} {
  const lines = stdout.split('\n');
  const all = (key: string) =>
    lines.filter((l) => l === key || l.startsWith(key + ' ')).map((l) => l.slice(key.length + 1));
  return { all, get: (key) => all(key)[0] };
}
