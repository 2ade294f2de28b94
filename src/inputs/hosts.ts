// Parses the `hosts` input: one or more hosts, newline- or comma-separated, each
// `host`, `host:port`, `user@host`, `user@host:port` or a bracketed IPv6 address
// (`[::1]:2222`), optionally followed by attributes (then one host per line):
// `roles=api,worker,scheduler,migrate` or `roles=lb` (a load balancer in front
// of the api hosts), and `upstream=addr:port` (where the load balancer reaches
// this host, when not at its SSH address on port 80).

import { isIP } from 'node:net';

export const ROLES = ['api', 'worker', 'scheduler', 'migrate', 'lb'] as const;
const ATTRIBUTES = ['roles', 'upstream'];
export type Role = (typeof ROLES)[number];

export interface HostSpec {
  /** As written, for logs and summaries. */
  label: string;
  host: string;
  port: number;
  user?: string;
  roles: Role[];
  /** Where a load balancer reaches this host's nginx (default: host:80). */
  upstream?: { host: string; port: number };
}

const HOSTNAME =
  /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const USER = /^[a-z_][a-z0-9_-]{0,31}$/;

export function parsePort(text: string): number | string {
  if (!/^\d{1,5}$/.test(text)) return `port '${text}' is not a number`;
  const port = Number(text);
  if (port < 1 || port > 65535) return `port ${port} is out of range`;
  return port;
}

/** Parses one `user@host:port` address; returns an error text instead of throwing. */
export function parseAddress(text: string, defaultPort = 22): Omit<HostSpec, 'roles' | 'upstream'> | string {
  let rest = text;
  let user: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
    if (!USER.test(user)) return `'${text}' has an invalid user name '${user}'`;
  }
  let host: string;
  let port = defaultPort;
  if (rest.startsWith('[')) {
    const end = rest.indexOf(']');
    if (end < 0) return `'${text}' has an unclosed '[' (IPv6 addresses are written [addr] or [addr]:port)`;
    host = rest.slice(1, end);
    const after = rest.slice(end + 1);
    if (after) {
      if (!after.startsWith(':')) return `'${text}' has text after ']' that is not ':port'`;
      const p = parsePort(after.slice(1));
      if (typeof p === 'string') return `'${text}': ${p}`;
      port = p;
    }
    if (isIP(host) !== 6) return `'${text}': '${host}' is not an IPv6 address`;
  } else {
    const parts = rest.split(':');
    if (parts.length > 2)
      return `'${text}' looks like an IPv6 address: write it in brackets, e.g. [${rest}]:22`;
    host = parts[0] ?? '';
    if (parts.length === 2) {
      const p = parsePort(parts[1] ?? '');
      if (typeof p === 'string') return `'${text}': ${p}`;
      port = p;
    }
    if (!host) return `'${text}' has no host name`;
    if (isIP(host) !== 4 && !HOSTNAME.test(host))
      return `'${text}': '${host}' is not a valid host name or IP address`;
  }
  return { label: text, host, port, ...(user ? { user } : {}) };
}

/** Parses the whole `hosts` input; returns the hosts or a list of problems. */
export function parseHosts(text: string, defaultPort = 22): HostSpec[] | string {
  const lines = text
    .replace(/\r\n?/g, '\n')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const hosts: HostSpec[] = [];
  for (const line of lines) {
    const words = line.split(/\s+/);
    if (words.slice(1).some((w) => /^[a-z-]+=/.test(w))) {
      const parsed = parseLine(line, words, defaultPort);
      if (typeof parsed === 'string') return parsed;
      hosts.push(parsed);
      continue;
    }
    for (const item of line.split(',').map((s) => s.trim())) {
      if (!item) continue;
      if (/\s/.test(item)) return `'${item}' contains white space`;
      const parsed = parseAddress(item, defaultPort);
      if (typeof parsed === 'string') return parsed;
      hosts.push({ ...parsed, roles: [] });
    }
  }
  if (hosts.length === 0) return 'no host given';
  const seen = new Set<string>();
  for (const h of hosts) {
    const key = `${h.host.toLowerCase()}:${h.port}`;
    if (seen.has(key)) return `'${h.label}' is listed twice`;
    seen.add(key);
  }
  return hosts;
}

/** One `address attr=value ...` line. */
function parseLine(line: string, words: string[], defaultPort: number): HostSpec | string {
  const address = words[0]!;
  if (address.includes(',') || !words.slice(1).every((w) => /^[a-z-]+=/.test(w)))
    return `'${line}': with attributes, write one host per line`;
  const attrs = new Map<string, string>();
  for (const w of words.slice(1)) {
    const eq = w.indexOf('=');
    const key = w.slice(0, eq);
    if (!ATTRIBUTES.includes(key))
      return `'${line}': unknown attribute '${key}' (expected ${ATTRIBUTES.map((a) => `${a}=`).join(' or ')})`;
    if (attrs.has(key)) return `'${line}': ${key}= is given twice`;
    attrs.set(key, w.slice(eq + 1));
  }
  const parsed = parseAddress(address, defaultPort);
  if (typeof parsed === 'string') return parsed;
  const roles: Role[] = [];
  if (attrs.has('roles')) {
    const names = attrs.get('roles')!.split(',').filter(Boolean);
    if (names.length === 0) return `'${line}': roles= is empty (expected some of ${ROLES.join(', ')})`;
    for (const role of names) {
      if (!(ROLES as readonly string[]).includes(role))
        return `'${line}': unknown role '${role}' (expected some of ${ROLES.join(', ')})`;
      if (!roles.includes(role as Role)) roles.push(role as Role);
    }
    if (roles.includes('lb') && roles.length > 1)
      return `'${line}': a load balancer (roles=lb) runs no app role; expected roles=lb alone`;
  }
  const spec: HostSpec = { ...parsed, roles };
  const upstream = attrs.get('upstream');
  if (upstream !== undefined) {
    if (roles.includes('lb')) return `'${line}': upstream= is for app hosts, not for the load balancer`;
    const u = parseAddress(upstream, 80);
    if (typeof u === 'string' || u.user)
      return `'${line}': upstream= ${typeof u === 'string' ? u.replace(/^'[^']*'/, `'${upstream}'`) : 'takes no user'} (expected addr or addr:port, e.g. upstream=10.0.0.5:80)`;
    spec.upstream = { host: u.host, port: u.port };
  }
  return spec;
}

/** Is a load balancer (roles=lb) in front of the app hosts? */
export function hasBalancer(hosts: HostSpec[]): boolean {
  return hosts.some((h) => h.roles.includes('lb'));
}
