// Field builders: each input is a zod schema over the raw string plus the text
// that error messages and action.yml show. All parsing of raw inputs lives here.

import { z } from 'zod';

type Infer<F> = F extends Field<infer T> ? T : never;
/** The typed settings an action's inputs parse into. */
export type SettingsOf<I extends Record<string, Field>> = { [K in keyof I]: Infer<I[K]> };

/** What a field builder is told about an input. */
type Opts = {
  description: string;
  /** The action.yml default, as a string; `{app}` is replaced by the app name. */
  default?: string;
  required?: boolean;
  /** Masked in logs and never echoed in error messages. */
  secret?: boolean;
  /** The schema's error messages never quote the value, so they may be shown even for a secret. */
  revealErrors?: boolean;
  /** Takes several lines (lists, keys, known_hosts, dotenv); every other input is one line. */
  multiline?: boolean;
  /** An empty value given explicitly is a value of its own, not the default (only an input not set at all takes the default). */
  emptyIsValue?: boolean;
  /** The default is an expression only the runner evaluates (`${{ github.token }}`): action.yml declares it. */
  runnerDefault?: boolean;
  /** Why the config file never gives this input (a value for one run, or one recorded elsewhere); unset: the file may. */
  notInConfig?: string;
};

export interface Field<T = unknown> extends Opts {
  /** What a valid value looks like, for error messages. */
  expected: string;
  schema: z.ZodType<T, string>;
  /**
   * An input with true and false among its values: on the command line, `--name`
   * alone means true and `--no-name` false.
   */
  flag?: boolean;
  /** The words `--name` takes as its value when it is a flag (true and false, or a choice's values). */
  words?: readonly string[];
}

/** A value as error messages quote it (never used for secrets). */
export const quote = (v: string, max = 60) => `'${v.length > max ? v.slice(0, max) + '...' : v}'`;

// A line break or other control character (C1 and U+2028/9 included) in a
// one-line input would end a command, a config line or a log line; multi-line
// inputs may have line breaks and tabs only.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;
// eslint-disable-next-line no-control-regex
const CONTROL_IN_LINES = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]/;

/** Where a value has a control character it must not have; the message names the position only. */
export function controlCharacterProblem(v: string, multiline = false): string | null {
  const at = v.search(multiline ? CONTROL_IN_LINES : CONTROL);
  if (at < 0) return null;
  if (!multiline)
    return `has a line break or other control character at position ${at + 1} (it is a one-line input)`;
  const before = v.slice(0, at).split('\n');
  return `line ${before.length}, position ${before[before.length - 1]!.length + 1}: has a control character`;
}

function field<T>(opts: Opts, expected: string, schema: z.ZodType<T, string>): Field<T> {
  const lines = z.string().transform((v, ctx) => {
    const problem = controlCharacterProblem(v, opts.multiline);
    if (!problem) return v;
    ctx.addIssue({ code: 'custom', message: problem });
    return z.NEVER;
  });
  return { ...opts, expected, schema: lines.pipe(schema) };
}

/** Names an input refuses whatever its pattern allows (compared in lower case). */
export interface Reserved {
  names: readonly string[];
  prefixes?: readonly string[];
  suffixes?: readonly string[];
  why: string;
}

export const text = (opts: Opts & { expected?: string; max?: number }) =>
  field(
    opts,
    opts.expected ?? 'text',
    z.string().max(opts.max ?? 65536, `is longer than ${opts.max ?? 65536} characters`),
  );

export const bool = (opts: Opts): Field<boolean> => ({
  flag: true,
  ...field(
    opts,
    'true or false',
    z.string().transform((v, ctx) => {
      if (v === 'true') return true;
      if (v === 'false') return false;
      ctx.addIssue({ code: 'custom', message: `'${v.slice(0, 40)}' is not a boolean` });
      return z.NEVER;
    }),
  ),
});

export const int = (opts: Opts & { min: number; max: number; unit?: string }) =>
  field(
    opts,
    `a whole number from ${opts.min} to ${opts.max}${opts.unit ? ' ' + opts.unit : ''}`,
    z.string().transform((v, ctx) => {
      if (!/^-?\d+$/.test(v)) {
        ctx.addIssue({ code: 'custom', message: `'${v.slice(0, 40)}' is not a whole number` });
        return z.NEVER;
      }
      const n = Number(v);
      if (n < opts.min || n > opts.max) {
        ctx.addIssue({ code: 'custom', message: `${v.slice(0, 40)} is out of range` });
        return z.NEVER;
      }
      return n;
    }),
  );

export const choice = <const C extends readonly [string, ...string[]]>(opts: Opts & { choices: C }) => ({
  // A choice between true, false and more (migrate: auto) reads like a boolean on the command line.
  ...(opts.choices.includes('true') && opts.choices.includes('false')
    ? { flag: true, words: opts.choices }
    : {}),
  ...field(
    opts,
    `one of ${opts.choices.join(', ')}`,
    z.string().transform((v, ctx) => {
      if ((opts.choices as readonly string[]).includes(v)) return v as C[number];
      ctx.addIssue({ code: 'custom', message: `'${v.slice(0, 40)}' is not a known value` });
      return z.NEVER;
    }),
  ),
});

/** A value checked by a regular expression, with the reason shown when it fails. */
export const pattern = (
  opts: Opts & { regex: RegExp; expected: string; max?: number; reserved?: Reserved | Reserved[] },
) =>
  field(
    opts,
    opts.expected,
    z.string().transform((v, ctx) => {
      if (v.length > (opts.max ?? 255)) {
        ctx.addIssue({ code: 'custom', message: `is longer than ${opts.max ?? 255} characters` });
        return z.NEVER;
      }
      if (!opts.regex.test(v)) {
        ctx.addIssue({ code: 'custom', message: `${quote(v)} is not valid` });
        return z.NEVER;
      }
      const lower = v.toLowerCase();
      const r = [opts.reserved ?? []]
        .flat()
        .find(
          (r) =>
            r.names.includes(lower) ||
            r.prefixes?.some((p) => lower.startsWith(p)) ||
            r.suffixes?.some((p) => lower.endsWith(p)),
        );
      if (r) {
        ctx.addIssue({ code: 'custom', message: `${quote(v)} is reserved: ${r.why}` });
        return z.NEVER;
      }
      return v;
    }),
  );

/** A value turned into T by a function that returns T or an error text. */
export const custom = <T>(
  opts: Opts,
  meta: { expected: string },
  parse: (v: string) => T | { error: string },
) =>
  field(
    opts,
    meta.expected,
    z.string().transform((v, ctx) => {
      const result = parse(v);
      if (result && typeof result === 'object' && 'error' in (result as object)) {
        ctx.addIssue({ code: 'custom', message: (result as { error: string }).error });
        return z.NEVER;
      }
      return result as T;
    }),
  );

/** Splits a newline- (or comma-) separated list input into trimmed, non-empty items. */
export function splitList(v: string, commas = true): string[] {
  return v
    .replace(/\r\n?/g, '\n')
    .split(commas ? /[\n,]/ : /\n/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** A relative path inside the release: no absolute paths, no `..`, no odd characters. */
export function checkRelativePath(p: string): string | null {
  if (p.startsWith('/')) return `'${p}' is absolute`;
  if (p.split('/').some((s) => s === '..')) return `'${p}' contains '..'`;
  if (!/^[A-Za-z0-9._/@+-]+$/.test(p))
    return `'${p.slice(0, 60)}' contains characters other than letters, digits and ._/@+-`;
  return null;
}

/** A command line for a systemd unit: words of safe characters, split on spaces. */
export function checkCommand(v: string): string[] | { error: string } {
  // Spaces only: other white space is refused below (or, for line breaks, before),
  // never silently taken as a word separator.
  const words = v.split(' ').filter(Boolean);
  for (const [i, w] of words.entries()) {
    if (CREDENTIALS.test(w))
      return {
        error: `word ${i + 1} is a URL with a user name or password, which would be logged (keep credentials on the host, e.g. in pip.conf)`,
      };
    if (!/^[A-Za-z0-9_.:/=@,+%{}-]+$/.test(w)) {
      return {
        error: `word ${quote(w, 40)} contains characters other than letters, digits and _.:/=@,+%{}-`,
      };
    }
  }
  return words;
}

/** user:password@ (or user@) in a URL. */
const CREDENTIALS = /:\/\/[^/?#]*@/;

/**
 * An http(s) URL that names a host and carries no credentials (it is logged).
 * A secret URL (a webhook with its token) is never quoted in messages, and may
 * carry credentials: it is masked, and never logged. Empty stays empty (for
 * optional inputs).
 */
export const url = (opts: Opts & { https?: boolean }) => {
  const schemes = opts.https ? ['https:'] : ['http:', 'https:'];
  const what = opts.https ? 'an https:// URL' : 'an http:// or https:// URL';
  const expected = `${what} with a host${opts.secret ? '' : ', without a user name or password'}`;
  return custom({ ...opts, revealErrors: opts.secret }, { expected }, (v) => {
    if (!v) return '';
    // Quoted with user:password@ hidden, so a refused URL never prints its credentials.
    const shown = opts.secret ? 'the value' : quote(v.replace(/^([^:/?#]*:\/\/)[^/?#]*@/, '$1***@'));
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      return { error: `${shown} is not a URL` };
    }
    if (!schemes.includes(u.protocol))
      return { error: `${shown} is not ${opts.https ? 'https' : 'http(s)'}` };
    // WHATWG URL reads http:///health as http://health/: the host must be written.
    if (!/^[a-z][a-z0-9+.-]*:\/\/([^/?#]*@)?[^/?#@:]/i.test(v)) return { error: `${shown} has no host` };
    if (!opts.secret && (u.username || u.password))
      return { error: `${shown} has a user name or password, which would be logged` };
    return u.toString();
  });
};

/** The shortest password-like secret taken: shorter ones are guessable, and masking them would mask ordinary words in logs. */
export const MIN_PASSWORD = 8;

/** A password-like secret: one line, empty or at least MIN_PASSWORD characters. Messages never quote it. */
export const password = (opts: Opts) =>
  field(
    { ...opts, secret: true, revealErrors: true },
    `empty or ${MIN_PASSWORD} to 1024 characters on one line`,
    z.string().transform((v, ctx) => {
      const problem =
        v.length > 1024
          ? 'is longer than 1024 characters'
          : v && v.length < MIN_PASSWORD
            ? `is shorter than ${MIN_PASSWORD} characters: too short to be a password, and too short to be masked in logs (masking it would hide ordinary text too)`
            : null;
      if (!problem) return v;
      ctx.addIssue({ code: 'custom', message: problem });
      return z.NEVER;
    }),
  );

// Trees of the system: a directory of the app's inside one would hand system
// files to the app user (the app tree is chowned to it), be wiped (tmp, cache,
// run) or break the host (the backup directory is made root-only, mode 700).
const SYSTEM_TREES = [
  '/bin',
  '/boot',
  '/dev',
  '/etc',
  '/lib',
  '/lib32',
  '/lib64',
  '/libx32',
  '/lost+found',
  '/proc',
  '/root',
  '/run',
  '/sbin',
  '/snap',
  '/sys',
  '/tmp',
  '/usr',
  '/var/cache',
  '/var/lock',
  '/var/log',
  '/var/mail',
  '/var/run',
  '/var/spool',
  '/var/tmp',
];
/** Directories that hold other software's directories: a place for the app's own, never the app's directory itself. */
const SHARED_PARENTS = [
  '/',
  '/home',
  '/media',
  '/mnt',
  '/opt',
  '/srv',
  '/var',
  '/var/backups',
  '/var/lib',
  '/var/local',
  '/var/opt',
  '/var/www',
];
/** State of services on the host, under /var/lib. */
const SERVICE_STATE = [
  'apt',
  'dpkg',
  'letsencrypt',
  'nginx',
  'postgresql',
  'redis',
  'sudo',
  'systemd',
  'ufw',
];

/** Why an absolute, normalised directory is not one the tool may own, or null. */
export function systemDirectoryProblem(p: string): string | null {
  const tree = SYSTEM_TREES.find((t) => p === t || p.startsWith(t + '/'));
  if (tree) return `${p === tree ? 'is' : 'is inside'} ${tree}, a system directory`;
  if (SHARED_PARENTS.includes(p)) return `is ${p} itself, which holds other software's directories`;
  const parts = p.split('/').slice(1);
  if (parts.length === 1) return 'is a top-level directory';
  if (parts[0] === 'home' && parts.length === 2) return "is a user's home directory";
  if (parts[0] === 'var' && parts[1] === 'lib' && SERVICE_STATE.includes(parts[2]!))
    return `is inside /var/lib/${parts[2]}, the state of a system service`;
  return null;
}

/** Whether path a is b or inside it (both absolute and normalised). */
export const within = (a: string, b: string) => a === b || a.startsWith(b === '/' ? '/' : b + '/');

/** An absolute directory of the app's own on the hosts, normalised (no trailing or doubled slashes). */
export const directory = (opts: Opts & { example: string; optional?: boolean }) =>
  custom<string>(
    opts,
    {
      expected: `${opts.optional ? 'empty, or ' : ''}an absolute path of a directory of its own, e.g. ${opts.example} (not a system directory such as /etc, /var/lib or /tmp)`,
    },
    (v) => {
      if (!v && opts.optional) return '';
      if (!v.startsWith('/')) return { error: `${quote(v)} is not absolute` };
      const parts = v.split('/').filter(Boolean);
      if (parts.some((s) => s === '.' || s === '..')) return { error: `${quote(v)} contains . or ..` };
      if (!/^[A-Za-z0-9._/-]+$/.test(v))
        return { error: `${quote(v)} contains characters other than letters, digits and ._/-` };
      const p = '/' + parts.join('/');
      const problem = systemDirectoryProblem(p);
      return problem ? { error: `${quote(p)} ${problem}` } : p;
    },
  );
