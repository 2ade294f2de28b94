// Field builders: each input is a zod schema over the raw string plus the text
// that error messages and action.yml show. All parsing of raw inputs lives here.

import { z } from 'zod';

export interface Field<T = unknown> {
  description: string;
  /** The action.yml default, as a string; `{app}` is replaced by the app name. */
  default?: string;
  required?: boolean;
  /** Masked in logs and never echoed in error messages. */
  secret?: boolean;
  /** The schema's error messages never quote the value, so they may be shown even for a secret. */
  revealErrors?: boolean;
  /** What a valid value looks like, for error messages. */
  expected: string;
  schema: z.ZodType<T, string>;
}

type Opts = {
  description: string;
  default?: string;
  required?: boolean;
  secret?: boolean;
  revealErrors?: boolean;
};

function field<T>(opts: Opts, expected: string, schema: z.ZodType<T, string>): Field<T> {
  return { ...opts, expected, schema };
}

export const text = (opts: Opts & { expected?: string; max?: number }) =>
  field(
    opts,
    opts.expected ?? 'text',
    z.string().max(opts.max ?? 65536, `is longer than ${opts.max ?? 65536} characters`),
  );

export const bool = (opts: Opts) =>
  field(
    opts,
    'true or false',
    z.string().transform((v, ctx) => {
      if (v === 'true') return true;
      if (v === 'false') return false;
      ctx.addIssue({ code: 'custom', message: `'${v.slice(0, 40)}' is not a boolean` });
      return z.NEVER;
    }),
  );

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

export const choice = <const C extends readonly [string, ...string[]]>(opts: Opts & { choices: C }) =>
  field(
    opts,
    `one of ${opts.choices.join(', ')}`,
    z.string().transform((v, ctx) => {
      if ((opts.choices as readonly string[]).includes(v)) return v as C[number];
      ctx.addIssue({ code: 'custom', message: `'${v.slice(0, 40)}' is not a known value` });
      return z.NEVER;
    }),
  );

/** A value checked by a regular expression, with the reason shown when it fails. */
export const pattern = (opts: Opts & { regex: RegExp; expected: string; max?: number }) =>
  field(
    opts,
    opts.expected,
    z.string().transform((v, ctx) => {
      if (v.length > (opts.max ?? 255)) {
        ctx.addIssue({ code: 'custom', message: `is longer than ${opts.max ?? 255} characters` });
        return z.NEVER;
      }
      if (!opts.regex.test(v)) {
        ctx.addIssue({ code: 'custom', message: `'${v.slice(0, 60).replace(/\n/g, '\\n')}' is not valid` });
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
  const words = v.trim().split(/\s+/).filter(Boolean);
  for (const w of words) {
    if (!/^[A-Za-z0-9_.:/=@,+%{}-]+$/.test(w)) {
      return {
        error: `word '${w.slice(0, 40)}' contains characters other than letters, digits and _.:/=@,+%{}-`,
      };
    }
  }
  return words;
}
