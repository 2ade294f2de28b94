// How the other daemons read the files metalship writes for them, closely
// enough to assert what a generated file means. Each follows the program's own
// tokenizer (named beside it) and throws where that program reports an error.

/** Redis config lines (sdssplitargs): "..." with \xHH, \n, \\ ...; '...' with \' only; # comments. */
export function parseRedisConf(text: string): string[][] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map(splitArgs);
}

function splitArgs(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  const closeQuote = () => {
    if (i + 1 < line.length && !/\s/.test(line[i + 1]!))
      throw new Error(`a closing quote must be followed by a space: ${line}`);
  };
  for (;;) {
    while (i < line.length && /\s/.test(line[i]!)) i++;
    if (i >= line.length) return out;
    let word = '';
    let q: '"' | "'" | '' = '';
    for (let done = false; !done; i++) {
      const c = line[i];
      if (q === '"') {
        if (c === undefined) throw new Error(`unbalanced quotes: ${line}`);
        const hex = /^\\x([0-9a-fA-F]{2})/.exec(line.slice(i));
        if (hex) {
          word += String.fromCharCode(parseInt(hex[1]!, 16));
          i += 3;
        } else if (c === '\\' && i + 1 < line.length) {
          const e = line[++i]!;
          word += { n: '\n', r: '\r', t: '\t', b: '\b', a: '\x07' }[e] ?? e;
        } else if (c === '"') {
          closeQuote();
          done = true;
        } else word += c;
      } else if (q === "'") {
        if (c === undefined) throw new Error(`unbalanced quotes: ${line}`);
        if (c === '\\' && line[i + 1] === "'") {
          word += "'";
          i++;
        } else if (c === "'") {
          closeQuote();
          done = true;
        } else word += c;
      } else if (c === undefined || /\s/.test(c)) {
        done = true;
      } else if (c === '"' || c === "'") {
        q = c;
      } else word += c;
    }
    out.push(word);
  }
}

/** Redis 7 ACL file lines (ACLLoadFromFile): trimmed, split on single spaces, no quoting, no comments. */
export function parseAclFile(text: string): { user: string; rules: string[] }[] {
  return text
    .split('\n')
    .map((l) => l.replace(/^[ \t\r]+|[ \t\r]+$/g, ''))
    .filter(Boolean)
    .map((l) => {
      const [kw, user, ...rules] = l.split(' ');
      if (kw !== 'user' || !user) throw new Error(`an ACL line must start with 'user <name>': ${l}`);
      if (rules.includes('')) throw new Error(`an empty ACL rule (two spaces) in: ${l}`);
      return { user, rules };
    });
}

/** sshd_config lines (argv_split with comments): keyword (lower case) and arguments, in order. */
export function parseSshdConfig(text: string): { keyword: string; args: string[] }[] {
  const out: { keyword: string; args: string[] }[] = [];
  for (const line of text.split('\n')) {
    const words: string[] = [];
    let i = 0;
    while (i < line.length) {
      if (line[i] === ' ' || line[i] === '\t') {
        i++;
        continue;
      }
      if (line[i] === '#') break;
      let word = '';
      let q = '';
      for (; i < line.length; i++) {
        const c = line[i]!;
        const n = line[i + 1];
        if (c === '\\' && (n === "'" || n === '"' || n === '\\' || (!q && n === ' '))) word += line[++i];
        else if (!q && (c === ' ' || c === '\t')) break;
        else if (!q && (c === '"' || c === "'")) q = c;
        else if (q && c === q) q = '';
        else word += c;
      }
      if (q) throw new Error(`unterminated quote: ${line}`);
      words.push(word);
    }
    if (words.length) out.push({ keyword: words[0]!.toLowerCase(), args: words.slice(1) });
  }
  return out;
}

export interface HbaToken {
  value: string;
  /** A quoted token is never a keyword (all, replication, +group, @file). */
  quoted: boolean;
}

/** pg_hba.conf lines (next_token/next_field_expand): fields of comma-separated tokens, "" for a quote inside quotes. */
export function parseHba(text: string): HbaToken[][][] {
  const lines: HbaToken[][][] = [];
  for (const line of text.split('\n')) {
    const fields: HbaToken[][] = [];
    let i = 0;
    let field: HbaToken[] = [];
    for (;;) {
      while (i < line.length && /[ \t]/.test(line[i]!)) i++;
      if (i >= line.length || line[i] === '#') break;
      let value = '';
      let inQuote = false;
      let quoted = false;
      let comma = false;
      for (; i < line.length; i++) {
        const c = line[i]!;
        if (!inQuote && /[ \t]/.test(c)) break;
        if (!inQuote && c === '#') break;
        if (!inQuote && c === ',') {
          comma = true;
          i++;
          break;
        }
        if (c === '"') {
          if (inQuote && line[i + 1] === '"') {
            value += '"';
            i++;
            continue;
          }
          inQuote = !inQuote;
          quoted = true;
          continue;
        }
        value += c;
      }
      if (inQuote) throw new Error(`unterminated quote: ${line}`);
      field.push({ value, quoted });
      if (!comma) {
        fields.push(field);
        field = [];
      }
    }
    if (field.length) throw new Error(`a list ends in a comma: ${line}`);
    if (fields.length) lines.push(fields);
  }
  return lines;
}

/**
 * A logrotate rule (config.c): the file patterns are everything up to the
 * first '{' (a '}' before it is an error), split by popt's shell-like rules;
 * then the directives up to '}'.
 */
export function parseLogrotate(text: string): { patterns: string[]; directives: string[][] } {
  const body = text
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n');
  const open = body.indexOf('{');
  const close = body.indexOf('}');
  if (open < 0 || (close >= 0 && close < open)) throw new Error("missing '{' after log files definition");
  if (close < 0) throw new Error("missing '}'");
  if (body.slice(close + 1).trim()) throw new Error('text after the rule');
  const patterns: string[] = [];
  let word: string | null = null;
  let q = '';
  const src = body.slice(0, open);
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (q && c === q) q = '';
    else if (q) word = (word ?? '') + (c === '\\' ? src[++i]! : c);
    else if (/\s/.test(c)) {
      if (word !== null) patterns.push(word);
      word = null;
    } else if (c === '"' || c === "'") {
      q = c;
      word = word ?? '';
    } else word = (word ?? '') + (c === '\\' ? src[++i]! : c);
  }
  if (q) throw new Error('unterminated quote in the file list');
  if (word !== null) patterns.push(word);
  const directives = body
    .slice(open + 1, close)
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => l.split(/\s+/));
  return { patterns, directives };
}

/** sudoers lines (a subset: Defaults:user and one user spec); a backslash escapes the next character. */
export function parseSudoers(text: string): {
  defaults: { user: string; options: string[] }[];
  rules: { user: string; host: string; runas: string; tags: string[]; commands: string[] }[];
} {
  const defaults: { user: string; options: string[] }[] = [];
  const rules: { user: string; host: string; runas: string; tags: string[]; commands: string[] }[] = [];
  const unescape = (s: string) => s.replace(/\\(.)/g, '$1');
  // Splits on an unescaped separator.
  const split = (s: string, sep: RegExp) => s.split(new RegExp(`(?<!\\\\)${sep.source}`));
  for (const line of text.split('\n')) {
    if (/^\s*(#|$)/.test(line)) continue;
    const match = /^Defaults:((?:\\.|[^\s\\])+)\s+(.*)$/.exec(line);
    if (match) {
      defaults.push({ user: unescape(match[1]!), options: split(match[2]!, /,\s*/).map(unescape) });
      continue;
    }
    const r =
      /^((?:\\.|[^\s\\])+)\s+((?:\\.|[^\s=\\])+)\s*=\s*\(((?:\\.|[^)\\])+)\)\s*((?:[A-Z_]+:\s*)*)(.*)$/.exec(
        line,
      );
    if (!r) throw new Error(`not a sudoers line this parser knows: ${line}`);
    rules.push({
      user: unescape(r[1]!),
      host: unescape(r[2]!),
      runas: unescape(r[3]!),
      tags: [...r[4]!.matchAll(/([A-Z_]+):/g)].map((m) => m[1]!),
      commands: split(r[5]!, /,\s*/).map((c) => unescape(c.trim())),
    });
  }
  return { defaults, rules };
}
