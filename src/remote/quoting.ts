// Quoting for the files we generate, each in its own syntax: a value from the
// settings is escaped for where it goes, the way sh`` quotes it in a script.
// raw() marks text we wrote ourselves (a %i specifier, a $VAR meant to expand).
// A value that a syntax cannot hold is refused with an error naming it, never
// written half-escaped: the file would otherwise fail to load, or mean something else.

import { isIP } from 'node:net';
import { Raw } from './sh.js';

/** Literal text (escaped) and raw() fragments (kept as written). */
export type Part = string | Raw;

function literal(parts: Part[]): string {
  return parts.map((p) => (p instanceof Raw ? p.text : p)).join('');
}

function refuse(value: string, where: string, why: string): never {
  throw new Error(`${JSON.stringify(value)} cannot be written in ${where}: ${why}`);
}

// ---- systemd unit files ----------------------------------------------------

/** A systemd specifier such as %i (the instance) or %n (the unit), kept where the values around it are escaped. */
export function specifier(letter: 'i' | 'n'): Raw {
  return new Raw(`%${letter}`);
}

/** $NAME as a whole ExecStart= word: systemd splits the variable's value into words when it runs the command. */
export function splitVariable(name: string): Raw {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
    throw new Error(`${JSON.stringify(name)} is not a variable name`);
  return new Raw(`$${name}`);
}

const UNIT_PLAIN = /^[A-Za-z0-9_@%+=:,./{}~-]+$/;

/** C escape of one character inside systemd's double quotes (its word splitting unescapes them). */
function cEscape(c: string): string {
  if (c === '\\' || c === '"') return `\\${c}`;
  if (c === '\n') return '\\n';
  if (c === '\t') return '\\t';
  const code = c.charCodeAt(0);
  return code < 0x20 || code === 0x7f ? `\\x${code.toString(16).padStart(2, '0')}` : c;
}

/**
 * One word of a setting systemd splits into words (ExecStart=, Environment=,
 * ReadWritePaths=...): double-quoted with C escapes unless plain, % doubled
 * (systemd resolves specifiers after unquoting, so quotes do not protect a %),
 * and with dollar true (ExecStart=) $ doubled too, since $VAR expands when the
 * command runs, quoted or not.
 */
function unitWordOf(parts: Part[], dollar: boolean): string {
  const text = literal(parts);
  if (text === '') return '""';
  if (text.includes('\0')) refuse(text, 'a unit file', 'it holds a NUL byte');
  // Our raw() fragments need no quotes; a word of only raw() stays as written.
  const values = parts.filter((p): p is string => typeof p === 'string').join('');
  const plain = values === '' || UNIT_PLAIN.test(values);
  const body = parts
    .map((p) => {
      if (p instanceof Raw) return p.text;
      let t = p.replace(/%/g, '%%');
      if (dollar) t = t.replace(/\$/g, '$$$$');
      return plain ? t : [...t].map(cEscape).join('');
    })
    .join('');
  return plain ? body : `"${body}"`;
}

/** A word of a list setting that unquotes (ReadWritePaths=, RuntimeDirectory=, WantedBy=, Environment=). */
export function unitWord(...parts: Part[]): string {
  return unitWordOf(parts, false);
}

/** Environment=NAME=value as one quoted word (Environment= expands specifiers, not variables). */
export function unitEnv(name: string, ...value: Part[]): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
    throw new Error(`${JSON.stringify(name)} is not a variable name`);
  return unitWord(`${name}=`, ...value);
}

/**
 * An ExecStart= command line: one word per argument. The program must be an
 * absolute path: a first word starting with - @ : + ! would be read as
 * prefixes, whatever its quotes.
 */
export function execLine(words: Array<Part | Part[]>): string {
  const list = words.map((w) => (Array.isArray(w) ? w : [w]));
  const program = literal(list[0] ?? []);
  if (!program.startsWith('/')) refuse(program, 'ExecStart=', 'the program must be an absolute path');
  return list.map((w) => unitWordOf(w, true)).join(' ');
}

/**
 * A setting systemd takes whole, without unquoting (Description=, User=,
 * WorkingDirectory=, EnvironmentFile=, OnCalendar=): % doubled; the value
 * must stay on its line and keep its ends (systemd trims them, and a final
 * backslash would continue the line).
 */
export function unitText(...parts: Part[]): string {
  const text = literal(parts);
  // eslint-disable-next-line no-control-regex
  if (/[\0-\x1f\x7f]/.test(text)) refuse(text, 'a unit file setting', 'it holds a control character');
  if (text !== text.trim() || text.endsWith('\\'))
    refuse(text, 'a unit file setting', 'it starts or ends with white space or a backslash');
  return parts.map((p) => (p instanceof Raw ? p.text : p.replace(/%/g, '%%'))).join('');
}

// ---- nginx -----------------------------------------------------------------

const NGINX_PLAIN = /^[A-Za-z0-9_@%+=:,./*~[\]-]+$/;

/**
 * One nginx argument: plain, or double-quoted with \ and " escaped (inside
 * quotes ; { } # and white space are text). A $ is refused: nginx reads $name
 * as a variable in many directives, quoted or not, and has no escape for it.
 */
export function nginxWord(value: string): string {
  if (value.includes('$')) refuse(value, 'an nginx argument', 'nginx would read $ as a variable');
  // eslint-disable-next-line no-control-regex
  if (/[\0-\x1f\x7f]/.test(value)) refuse(value, 'an nginx argument', 'it holds a control character');
  return NGINX_PLAIN.test(value) ? value : `"${value.replace(/[\\"]/g, '\\$&')}"`;
}

/**
 * server_name's arguments from names separated by white space (the server-name
 * input's form) or "_". A name starting with ~ would be a regular expression.
 * A misplaced * wildcard (only server-name allows a *) is left to the nginx -t
 * the deploy runs before it uses a new site: refusing it here would fail every
 * switch, also where the site exists and the name is never written.
 */
export function nginxServerNames(names: string): string {
  const list = names.split(/\s+/).filter(Boolean);
  if (list.length === 0) refuse(names, 'server_name', 'no name');
  for (const n of list)
    if (n.startsWith('~')) refuse(n, 'server_name', 'nginx would read it as a regular expression');
  return list.map(nginxWord).join(' ');
}

/** host:port of an nginx upstream server, [addr]:port for IPv6; nginx has no IPv6 zone index (fe80::1%eth0). */
export function nginxAddress(host: string, port: number): string {
  if (host.includes('%')) refuse(host, 'an nginx upstream', 'nginx cannot use an IPv6 zone index');
  return nginxWord(isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`);
}

// ---- other daemons' files --------------------------------------------------

/**
 * A directory in a logrotate file list. logrotate reads the list up to the
 * first { and refuses a } before it, whatever the quotes, and globs each
 * pattern: only characters that mean themselves there are accepted.
 */
export function logrotateDir(dir: string, setting: string): string {
  if (!/^\/[A-Za-z0-9_@+,:=./-]*$/.test(dir))
    refuse(dir, 'a logrotate file list', `${setting} may only hold letters, digits and _@+,:=./- there`);
  return dir;
}

/**
 * A word in a file with no quoting at all, split on white space: the Redis 7
 * ACL file, logrotate's su user group.
 */
export function bareWord(value: string, where: string): string {
  // eslint-disable-next-line no-control-regex
  if (!value || /[\s\0-\x1f\x7f]/.test(value)) refuse(value, where, 'empty, or white space in it');
  return value;
}

/**
 * A database or role name in pg_hba.conf: always quoted, so all, replication,
 * sameuser... and a leading + or @ are names, not keywords; "" is a quote.
 * A leading / would still be a regular expression (PostgreSQL 16).
 */
export function hbaName(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (!value || /[\0-\x1f\x7f]/.test(value) || value.startsWith('/'))
    refuse(value, 'pg_hba.conf', 'empty, a control character, or a leading / (a regular expression)');
  return `"${value.replace(/"/g, '""')}"`;
}

/**
 * An address field of pg_hba.conf: an IPv4 or IPv6 network in CIDR form. Any
 * other text makes PostgreSQL refuse the whole file, and then refuse to start.
 */
export function hbaAddress(cidr: string): string {
  const m = /^([0-9A-Fa-f:.]+)\/(\d{1,3})$/.exec(cidr);
  const family = m ? isIP(m[1]!) : 0;
  if (!m || !family || Number(m[2]) > (family === 4 ? 32 : 128))
    refuse(cidr, 'pg_hba.conf', 'not an IPv4 or IPv6 network (address/prefix)');
  return cidr;
}

/** A user name in sudoers: the characters sudoers gives a meaning to are escaped with a backslash. */
export function sudoersName(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (!value || /[\s\0-\x1f\x7f]/.test(value) || /^[#%+]/.test(value))
    refuse(value, 'sudoers', 'empty, white space, or a leading # % + (a uid, group or netgroup)');
  return value.replace(/[!=:,()\\]/g, '\\$&');
}

/**
 * A value of an /etc/default file, read both by the shell (init scripts) and
 * by systemd's EnvironmentFile=: in double quotes, \ " $ ` are escaped the
 * same way for both.
 */
export function defaultsValue(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\0-\x1f\x7f]/.test(value)) refuse(value, 'an /etc/default file', 'it holds a control character');
  return `"${value.replace(/[\\"$`]/g, '\\$&')}"`;
}
