// How nginx reads its configuration (ngx_conf_read_token in ngx_conf_file.c),
// closely enough to assert what a generated file means: words separated by
// white space, "..." and '...' quoting, backslash escapes, `#` comments at the
// start of a word, `;` ending a directive, `{ ... }` blocks. Throws where nginx
// would report a syntax error.

export interface Directive {
  name: string;
  args: string[];
  block?: Directive[];
}

const SPACE = ' \t\r\n';

/** The word's value: \" \' \\ lose the backslash, \t \r \n become the character, other escapes stay. */
function unescape(raw: string): string {
  return raw.replace(/\\([\s\S])/g, (m, c: string) =>
    c === '"' || c === "'" || c === '\\' ? c : c === 't' ? '\t' : c === 'r' ? '\r' : c === 'n' ? '\n' : m,
  );
}

export function parseNginx(text: string): Directive[] {
  let i = 0;

  /** The next directive's words and how it ended: ';', '{', '}' (block end) or '' (end of file). */
  function readToken(): { words: string[]; end: ';' | '{' | '}' | '' } {
    const words: string[] = [];
    for (;;) {
      while (i < text.length && SPACE.includes(text[i]!)) i++;
      if (i >= text.length) {
        if (words.length) throw new Error('unexpected end of file, expecting ";" or "}"');
        return { words, end: '' };
      }
      const c = text[i]!;
      if (c === '#') {
        while (i < text.length && text[i] !== '\n') i++;
        continue;
      }
      if (c === ';' || c === '{') {
        if (!words.length) throw new Error(`unexpected "${c}"`);
        i++;
        return { words, end: c };
      }
      if (c === '}') {
        if (words.length) throw new Error('unexpected "}"');
        i++;
        return { words, end: '}' };
      }
      if (c === '"' || c === "'") {
        const start = ++i;
        while (i < text.length && text[i] !== c) i += text[i] === '\\' ? 2 : 1;
        if (i >= text.length) throw new Error(`unterminated ${c}`);
        words.push(unescape(text.slice(start, i)));
        i++;
        // After a closing quote nginx needs white space, ';' or '{'.
        if (i < text.length && !(SPACE + ';{').includes(text[i]!)) throw new Error(`unexpected "${text[i]}"`);
        continue;
      }
      const start = i;
      let variable = false;
      while (i < text.length) {
        const ch = text[i]!;
        if (ch === '{' && variable) {
          i++;
          continue;
        }
        variable = false;
        if (ch === '\\') {
          i += 2;
          continue;
        }
        if (ch === '$') {
          variable = true;
          i++;
          continue;
        }
        if (SPACE.includes(ch) || ch === ';' || ch === '{') break;
        i++;
      }
      words.push(unescape(text.slice(start, i)));
    }
  }

  function readBlock(nested: boolean): Directive[] {
    const out: Directive[] = [];
    for (;;) {
      const t = readToken();
      if (t.end === '') {
        if (nested) throw new Error('unexpected end of file, expecting "}"');
        return out;
      }
      if (t.end === '}') {
        if (!nested) throw new Error('unexpected "}"');
        return out;
      }
      const [name, ...args] = t.words as [string, ...string[]];
      out.push(t.end === '{' ? { name, args, block: readBlock(true) } : { name, args });
    }
  }

  return readBlock(false);
}

/** Every directive of that name, at any depth. */
export function findAll(tree: Directive[], name: string): Directive[] {
  return tree.flatMap((d) => [...(d.name === name ? [d] : []), ...(d.block ? findAll(d.block, name) : [])]);
}

/** Whether nginx would read a variable in this argument (directives that take variables: alias, root, ...). */
export function hasVariable(arg: string): boolean {
  return /\$(\{|[A-Za-z0-9_])/.test(arg);
}
