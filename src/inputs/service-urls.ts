// The app's DATABASE_URL and REDIS_URL, when they point at the app's db or
// redis host: those serve TLS with a CA of the host's own, and a client that
// does not verify it would hand its password to whoever stands in the middle
// on the private network. Clients read URLs differently (libpq ends the
// credentials at the first '@' or '/', SQLAlchemy at the first '@', redis-py
// at the last '@' before the path; libpq and SQLAlchemy read '#' as text,
// redis-py as a fragment), so every reading is checked: a URL refused under
// any of them is refused.

import { redisCaPath } from '../remote/provision/redis.js';
import { postgresqlCaPath } from '../remote/provision/service-tls.js';
import { topology, type HostSpec } from './hosts.js';

/** One way a client may read a URL: the hosts it connects to and its query parameters. */
interface Reading {
  scheme: string;
  hosts: string[];
  params: [string, string][];
}

function decoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** A host as an address compares: IPv4 in any form inet_aton takes, IPv6 compressed, IPv4-mapped IPv6 as IPv4. */
function normalHost(host: string): string {
  const bare = decoded(host).replace(/^\[(.*)\]$/, '$1');
  try {
    const name = new URL(`http://${bare.includes(':') ? `[${bare}]` : bare}/`).hostname;
    const mapped = /^\[::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(name);
    if (mapped) {
      const [hi, lo] = [parseInt(mapped[1]!, 16), parseInt(mapped[2]!, 16)];
      return [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.');
    }
    return name.replace(/^\[(.*)\]$/, '$1');
  } catch {
    return bare.toLowerCase();
  }
}

/** The hosts of an authority (libpq takes a list: a,b:5433,[::1]:5434). */
function authorityHosts(authority: string): string[] {
  // libpq decodes before it splits: %2C is a comma too.
  return decoded(authority)
    .split(',')
    .map((h) => h.replace(/^(\[[^\]]*\]).*$|:[^:]*$/, '$1'))
    .filter(Boolean);
}

function queryParams(query: string): [string, string][] {
  return query
    .split('&')
    .filter(Boolean)
    .map((pair) => {
      const i = pair.indexOf('=');
      return [decoded(i < 0 ? pair : pair.slice(0, i)), decoded(i < 0 ? '' : pair.slice(i + 1))];
    });
}

/** Every reading of a URL: credentials ending at each '@' (or none), the query with '#' as text and as a fragment. */
function urlReadings(url: string): Reading[] {
  const m = /^([A-Za-z][\w+.-]*):\/\/(.*)$/s.exec(url);
  if (!m) return [];
  const [scheme, rest] = [m[1]!.toLowerCase(), m[2]!];
  const starts = [0, ...[...rest.matchAll(/@/g)].map((a) => a.index + 1)];
  return starts.flatMap((start) => {
    const tail = rest.slice(start);
    const end = tail.search(/[/?]/);
    const authority = end < 0 ? tail : tail.slice(0, end);
    const afterAuthority = end < 0 ? '' : tail.slice(end);
    const q = afterAuthority.indexOf('?');
    const query = q < 0 ? '' : afterAuthority.slice(q + 1);
    const hosts = authorityHosts(authority.split('#')[0]!);
    return [query, query.split('#')[0]!].map((text) => {
      const params = queryParams(text);
      // libpq takes host and hostaddr from the query too, over the URL's own.
      const named = params.filter(([k]) => k === 'host' || k === 'hostaddr').flatMap(([, v]) => v.split(','));
      return { scheme, hosts: [...hosts, ...named], params };
    });
  });
}

/** A libpq key=value connection string's parameters (values bare or in single quotes, with backslash escapes). */
function conninfoParams(text: string): [string, string][] {
  const params: [string, string][] = [];
  const re = /\s*([A-Za-z_]+)\s*=\s*('((?:[^'\\]|\\.)*)'|\S*)/gy;
  for (let m = re.exec(text); m; m = re.exec(text))
    params.push([m[1]!, m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : m[2]!]);
  return params;
}

function conninfoReading(text: string): Reading[] {
  if (text.includes('://')) return [];
  const params = conninfoParams(text);
  const hosts = params.filter(([k]) => k === 'host' || k === 'hostaddr').flatMap(([, v]) => v.split(','));
  return params.length ? [{ scheme: 'postgresql', hosts, params }] : [];
}

/** The one value of a parameter, or null when it is missing or given more than once. */
function one(params: [string, string][], name: string): string | null {
  const values = params.filter(([k]) => k === name).map(([, v]) => v);
  return values.length === 1 ? values[0]! : null;
}

function pointsAt(reading: Reading, address: string, fallback: string[]): boolean {
  const at = normalHost(address);
  // libpq takes PGHOST/PGHOSTADDR from the environment (which env may set) where the URL has none,
  // and hostaddr is where it connects whatever host names: both count.
  const hosts = [...reading.hosts, ...fallback];
  return hosts.some((h) => normalHost(h.trim()) === at);
}

const FALSE = /^(0|f|false|n|no|off)$/i;

/** Refusals of the app's service URLs in env (provision's shared .env, a release's own). */
export function serviceUrlCheck(settings: {
  hosts: HostSpec[];
  app: string;
  env: { values: Record<string, string> };
  postgresql?: boolean;
  redis?: boolean;
}): string[] {
  const where = topology(settings.hosts);
  const problems: string[] = [];
  const db = settings.postgresql === false ? undefined : where.db;
  const databaseUrl = settings.env.values.DATABASE_URL;
  if (db && databaseUrl) {
    const ca = postgresqlCaPath(settings.app);
    const readings = [...urlReadings(databaseUrl), ...conninfoReading(databaseUrl)];
    const values = settings.env.values;
    const fallback = [values.PGHOST, values.PGHOSTADDR].filter(Boolean).flatMap((v) => v!.split(','));
    const unverified =
      // A service file names hosts and settings out of sight: not with a db host.
      [values.PGSERVICE, values.PGSERVICEFILE].some(Boolean) ||
      readings.some(
        (r) =>
          r.params.some(([k]) => k === 'service') ||
          (pointsAt(r, db.address, fallback) &&
            !(one(r.params, 'sslmode') === 'verify-full' && one(r.params, 'sslrootcert') === ca)),
      );
    if (unverified)
      problems.push(
        `Input 'env': DATABASE_URL points at the db host ${db.label} (${db.address}), which serves PostgreSQL with a CA of its own that the app hosts must verify; expected postgresql://<user>:<password>@${db.address.includes(':') ? `[${db.address}]` : db.address}:5432/<database>?sslmode=verify-full&sslrootcert=${ca} (provision writes that CA there on each app host), with no other sslmode or sslrootcert, and no PGSERVICE or service=.`,
      );
  }
  const redis = settings.redis === false ? undefined : where.redis;
  const redisUrl = settings.env.values.REDIS_URL;
  if (redis && redisUrl) {
    const ca = redisCaPath(settings.app);
    const unverified = urlReadings(redisUrl).some(
      (r) =>
        pointsAt(r, redis.address, []) &&
        !(
          r.scheme === 'rediss' &&
          one(r.params, 'ssl_ca_certs') === ca &&
          r.params.every(
            ([k, v]) =>
              !(k === 'ssl_cert_reqs' && v !== 'required') &&
              !(k === 'ssl_check_hostname' && FALSE.test(v)) &&
              // More CAs beside it would be trusted too.
              k !== 'ssl_ca_path' &&
              k !== 'ssl_ca_data',
          )
        ),
    );
    if (unverified)
      problems.push(
        `Input 'env': REDIS_URL points at the redis host ${redis.label} (${redis.address}), which serves Redis over TLS only, with a CA of its own that the app hosts must verify; expected rediss://<user>:<password>@${redis.address.includes(':') ? `[${redis.address}]` : redis.address}:6379/<db>?ssl_ca_certs=${ca} (provision writes that CA there on each app host), with no ssl_cert_reqs other than required, no ssl_check_hostname turned off and no other CA (ssl_ca_path, ssl_ca_data).`,
      );
  }
  return problems;
}
