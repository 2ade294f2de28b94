// Parses the `hosts` input: one or more hosts, newline- or comma-separated, each
// `host`, `host:port`, `user@host`, `user@host:port` or a bracketed IPv6 address
// (`[::1]:2222`), optionally followed by attributes (then one host per line):
// `roles=api,worker,scheduler,migrate`, `roles=lb` (a load balancer in front
// of the api hosts), `roles=db` and/or `roles=redis` (the app's PostgreSQL or
// Redis on a host of its own), `roles=backup` (receives a copy of every daily
// backup, pushed by the database's host), `upstream=addr:port` (where the load balancer
// reaches this host, when not at its SSH address on port 80), and
// `private=addr` (the host's address on the private network: where the app
// hosts reach a db or redis host, and the source address a db or redis host
// lets in from an app host).

import { isIP } from 'node:net';

export const ROLES = ['api', 'worker', 'scheduler', 'migrate', 'lb', 'db', 'redis', 'backup'] as const;
const ATTRIBUTES = ['roles', 'upstream', 'private'];
export type Role = (typeof ROLES)[number];
/** Roles of hosts that run none of the app: a load balancer, the database, Redis, the backup copies. */
export const APART_ROLES: readonly Role[] = ['lb', 'db', 'redis', 'backup'];

export interface HostSpec {
  /** As written, for logs and summaries. */
  label: string;
  host: string;
  port: number;
  user?: string;
  roles: Role[];
  /** Where a load balancer reaches this host's nginx (default: host:80). */
  upstream?: { host: string; port: number };
  /** The host's IP address on the private network (private=). */
  private?: string;
}

// A trailing dot (the absolute form of a name) is allowed.
const HOSTNAME =
  /^(?=.{1,253}\.?$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
/** A name whose last label is a number: the resolver reads it as an IPv4 address (inet_aton). */
const NUMERIC_NAME = /(^|\.)(\d+|0x[0-9a-f]*)\.?$/i;
const USER = /^[a-z_][a-z0-9_-]{0,31}$/;

export function parsePort(text: string): number | string {
  if (!/^\d{1,5}$/.test(text)) return `port '${text}' is not a number`;
  const port = Number(text);
  if (port < 1 || port > 65535) return `port ${port} is out of range`;
  return port;
}

/** Parses one `user@host:port` address; returns an error text instead of throwing. */
export function parseAddress(
  text: string,
  defaultPort = 22,
): Omit<HostSpec, 'roles' | 'upstream' | 'private'> | string {
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
    if (isIP(host) !== 4 && NUMERIC_NAME.test(host)) {
      // getaddrinfo reads 127.1, 0x7f.1, 2130706433 and 0177.0.0.1 all as 127.0.0.1
      // (and 010.0.0.1 as 8.0.0.1): one host in two spellings would escape the
      // duplicate check and the known_hosts lookup, so only the dotted quad is taken.
      let read = '';
      try {
        read = ` (read as ${new URL(`http://${host}`).hostname})`;
      } catch {
        // Not an address at all; the message says what is expected anyway.
      }
      return `'${text}': '${host}' is an IPv4 address in a shorthand, octal or hex form${read}; write it as a dotted quad of decimal numbers without leading zeros`;
    }
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
  const seen = new Map<string, string>();
  for (const h of hosts) {
    const key = `${canonicalHost(h.host)}:${h.port}`;
    const first = seen.get(key);
    if (first !== undefined)
      return first === h.label ? `'${h.label}' is listed twice` : `'${h.label}' is '${first}' listed twice`;
    seen.set(key, h.label);
  }
  return hosts;
}

/**
 * The one spelling of a host that its other spellings share: IPv6 compressed in
 * lower case (an IPv4-mapped address as IPv4), a name in lower case without a
 * trailing dot. For finding duplicates and matching names, never for connecting.
 */
export function canonicalHost(host: string): string {
  if (isIP(host) !== 6) {
    const name = host.toLowerCase().replace(/\.$/, '');
    // The loopback name is the loopback address (ssh and libc resolve it so).
    return name === 'localhost' ? '127.0.0.1' : name;
  }
  let h: string;
  try {
    h = new URL(`http://[${host}]`).hostname.slice(1, -1);
  } catch {
    return host.toLowerCase(); // a zone id (fe80::1%eth0) is no URL host
  }
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(h);
  if (!mapped) return h;
  const [hi, lo] = [parseInt(mapped[1]!, 16), parseInt(mapped[2]!, 16)];
  return [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.');
}

/**
 * The host a name refers to: as written in hosts, or the same address in another
 * spelling (user@ and :port optional; with several ports, the port named).
 */
export function findHost<T extends { label: string; host: string; port: number }>(
  hosts: T[],
  named: string,
): T | undefined {
  const byLabel = hosts.find((h) => h.label === named);
  if (byLabel) return byLabel;
  const address = isIP(named) === 6 ? { host: named, port: 22 } : parseAddress(named);
  if (typeof address === 'string') return undefined;
  const same = hosts.filter((h) => canonicalHost(h.host) === canonicalHost(address.host));
  return same.find((h) => h.port === address.port) ?? same[0];
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
    // Apart from the database: a copy on the database's own host would be lost with it.
    if (roles.includes('backup') && roles.length > 1)
      return `'${line}': the backup host (roles=backup) keeps the copies of a database that is elsewhere; expected roles=backup alone`;
    const apart = roles.filter((r) => r === 'db' || r === 'redis');
    if (apart.length && apart.length < roles.length)
      return `'${line}': a database or Redis host (roles=db, roles=redis) runs no app role and no load balancer; expected roles=db, roles=redis or roles=db,redis`;
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
  const own = attrs.get('private');
  if (own !== undefined) {
    // pg_hba and ufw take addresses, not names.
    if (!isIP(own))
      return `'${line}': private= '${own}' is not an IP address (expected e.g. private=10.0.0.5)`;
    spec.private = own;
  }
  return spec;
}

/** Does this host run the app (any role but lb, db and redis)? */
export function isAppHost(h: Pick<HostSpec, 'roles'>): boolean {
  return !h.roles.some((r) => APART_ROLES.includes(r));
}

/**
 * The hosts of the app's PostgreSQL and Redis when they have their own
 * (roles=db, roles=redis), with the address the app hosts reach them at, and
 * the app hosts' addresses they let in: each host's private=, else for an app
 * host its upstream= address, else its SSH address.
 */
export interface Topology {
  db: { label: string; address: string } | null;
  redis: { label: string; address: string } | null;
  /** The backup host (roles=backup): its address on the private network and its SSH port. */
  backup: { label: string; address: string; port: number } | null;
  appAddresses: string[];
}

export function privateAddress(h: HostSpec): string {
  return h.private ?? (isAppHost(h) ? h.upstream?.host : undefined) ?? h.host;
}

export function topology(hosts: HostSpec[]): Topology {
  const find = (role: Role) => {
    const h = hosts.find((x) => x.roles.includes(role));
    return h ? { label: h.label, address: privateAddress(h) } : null;
  };
  const backup = hosts.find((x) => x.roles.includes('backup'));
  return {
    db: find('db'),
    redis: find('redis'),
    backup: backup ? { label: backup.label, address: privateAddress(backup), port: backup.port } : null,
    appAddresses: [...new Set(hosts.filter(isAppHost).map(privateAddress))],
  };
}

/** Problems of the hosts input with db or redis hosts (none without them). */
export function topologyProblems(hosts: HostSpec[]): string[] {
  const problems: string[] = [];
  for (const role of ['db', 'redis', 'backup'] as const) {
    const holders = hosts.filter((h) => h.roles.includes(role));
    if (holders.length > 1)
      problems.push(
        `Input 'hosts' gives roles=${role} to ${holders.length} hosts (${holders.map((h) => h.label).join(', ')}); expected at most one.`,
      );
  }
  if (!hosts.some((h) => h.roles.includes('db') || h.roles.includes('redis'))) return problems;
  for (const h of hosts.filter((x) => !x.roles.includes('lb'))) {
    const address = privateAddress(h);
    if (!isIP(address))
      problems.push(
        `Input 'hosts': '${h.label}' has no IP address on the private network ('${address}' is a name); expected private=<address>, e.g. '${h.label} private=10.0.0.5' (the database and Redis hosts let app hosts in by address).`,
      );
  }
  return problems;
}

/** Is a load balancer (roles=lb) in front of the app hosts? */
export function hasBalancer(hosts: HostSpec[]): boolean {
  return hosts.some((h) => h.roles.includes('lb'));
}
