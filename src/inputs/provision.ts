// The provision action's own inputs: what a bare server is converged to. Each
// part of the standard can be switched off; secrets are flagged and masked.

import { isIP } from 'node:net';
import { POSTGRES_DATABASES, SYSTEM_USERS } from './definitions.js';
import {
  bool,
  choice,
  custom,
  directory,
  int,
  password,
  pattern,
  quote,
  splitList,
  url,
  type Field,
} from './fields.js';
import { parsePort } from './hosts.js';
import { envField } from './dotenv.js';

/** Port rules for ufw: 8080, 8080/tcp, 60000:61000/udp; normalised to port[:port]/protocol. */
export function parsePorts(v: string): string[] | { error: string } {
  const rules: string[] = [];
  for (const p of splitList(v)) {
    const match = /^(\d+)(?::(\d+))?(?:\/(tcp|udp))?$/.exec(p);
    if (!match) return { error: `${quote(p, 40)} is not a port, range or port/protocol` };
    const ports = [match[1]!, match[2]].filter((x) => x !== undefined).map(parsePort);
    const bad = ports.find((x) => typeof x === 'string');
    if (bad) return { error: `${quote(p, 40)}: ${bad}` };
    const [start, end] = ports as number[];
    if (end !== undefined && end < start!)
      return { error: `${quote(p, 40)}: the range ends before it starts` };
    rules.push(`${ports.join(':')}/${match[3] ?? 'tcp'}`);
  }
  return rules;
}

/** A network for pg_hba.conf and ufw: an IPv4 or IPv6 address and a prefix length that fits it. */
export function parseCidr(c: string): string | { error: string } {
  const match = /^([^/]+)\/(\d{1,3})$/.exec(c);
  if (!match) return { error: `${quote(c)} is not a CIDR network (address/prefix)` };
  const family = isIP(match[1]!);
  if (!family) return { error: `${quote(c)}: '${match[1]}' is not an IP address` };
  const max = family === 4 ? 32 : 128;
  const prefix = Number(match[2]);
  if (prefix > max) return { error: `${quote(c)}: prefix /${match[2]} is over ${max}` };
  // A network, not an address in one: 10.0.0.5/8 reads as a typo for 10.0.0.0/8 or 10.0.0.5/32.
  const network = networkAddress(match[1]!, family, prefix);
  if (network !== null)
    return { error: `${quote(c)} has host bits set: the network is ${network}/${prefix}` };
  return c;
}

/** The network address of ip/prefix when ip has bits set past the prefix; null when it has none. */
function networkAddress(ip: string, family: number, prefix: number): string | null {
  const bits = family === 4 ? 32 : 128;
  const value = family === 4 ? ipv4Value(ip) : ipv6Value(ip);
  const mask = prefix === 0 ? 0n : ((1n << BigInt(prefix)) - 1n) << BigInt(bits - prefix);
  if ((value & ~mask & ((1n << BigInt(bits)) - 1n)) === 0n) return null;
  const net = value & mask;
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((net >> s) & 255n)).join('.');
  const groups = [...Array(8).keys()].map((i) => ((net >> BigInt(112 - 16 * i)) & 0xffffn).toString(16));
  return groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}

function ipv4Value(ip: string): bigint {
  return ip.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function ipv6Value(ip: string): bigint {
  // An embedded IPv4 tail (::ffff:1.2.3.4) is two groups.
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(ip);
  const text = tail
    ? ip.replace(
        tail[1]!,
        ((v) => `${(v >> 16n).toString(16)}:${(v & 0xffffn).toString(16)}`)(ipv4Value(tail[1]!)),
      )
    : ip;
  const [head, rest] = text.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = rest ? rest.split(':') : [];
  const groups =
    rest === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g || '0', 16)), 0n);
}

/** node_exporter's listen address: [ipv4]:port, [ipv6]:port or :port. */
function parseListen(v: string): string | { error: string } {
  const match = /^(.*):([^:\]]*)$/.exec(v);
  if (!match) return { error: `${quote(v)} has no :port` };
  const port = parsePort(match[2]!);
  if (typeof port === 'string') return { error: `${quote(v)}: ${port}` };
  const host = match[1]!;
  const v6 = /^\[(.*)\]$/.exec(host);
  if (host && (v6 ? isIP(v6[1]!) !== 6 : isIP(host) !== 4))
    return { error: `${quote(v)}: '${host}' is not an IPv4 address or a bracketed IPv6 address` };
  return v;
}

const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$/;

const SQL_NAME = /^[a-z_][a-z0-9_-]{0,62}$/;
const OPTIONAL_SQL_NAME = /^(|[a-z_][a-z0-9_-]{0,62})$/;
const ROLE_RESERVED = {
  names: ['postgres', 'public', 'none', 'current_user', 'current_role', 'session_user'],
  prefixes: ['pg_'],
  why: "a PostgreSQL superuser or reserved role name (the app's role must be unprivileged)",
};
const ROLE_EXPECTED =
  'lowercase letters, digits, _ and -, starting with a letter or _; not postgres, public or a name starting with pg_';

export const provisionInputs = {
  check: bool({
    description: 'Report what would change on each host and change nothing.',
    default: 'false',
  }),
  limit: custom<string[]>(
    {
      description:
        'Provision only these hosts: host names as written in hosts, or roles (api, worker, scheduler, migrate, lb, db, redis), comma-separated. ' +
        'The others are not contacted, but still count (a load balancer lists every api host). Empty: all hosts.',
      multiline: true,
    },
    { expected: 'hosts as written in hosts, or role names, e.g. "lb" or "web3.example.com"' },
    (v) => {
      const items = splitList(v);
      const bad = items.find((i) => !/^[A-Za-z0-9_.:@[\]-]{1,300}$/.test(i));
      return bad ? { error: `'${bad.slice(0, 40)}' is not a host or a role` } : items;
    },
  ),
  // System
  system: bool({
    description:
      'System: refresh the package index when older than a day, install base packages, unattended-upgrades for security updates, kernel hardening sysctls.',
    default: 'true',
  }),
  'allow-untested-os': bool({
    description:
      'Provision a system it has not been tested on (tested: Debian 11, 12, 13; Ubuntu 22.04, 24.04). Off: such a host fails with a message and is not changed.',
    default: 'false',
  }),
  'security-updates': bool({
    description: 'Install pending security updates now (unattended-upgrade), besides enabling them daily.',
    default: 'true',
  }),
  // Firewall
  firewall: bool({
    description:
      'ufw: deny incoming by default, allow the port sshd really listens on, 80 and 443 when nginx is on, and firewall-allow.',
    default: 'true',
  }),
  'firewall-allow': custom<string[]>(
    {
      description: 'Extra ports to open, newline- or comma-separated: 8080, 8080/tcp, 60000:61000/udp.',
      multiline: true,
    },
    { expected: 'ports from 1 to 65535 or ranges start:end, e.g. "8080, 51820/udp, 60000:61000/udp"' },
    (v) => parsePorts(v),
  ),
  // SSH
  'ssh-hardening': bool({
    description:
      'sshd: key-only login, no password or keyboard-interactive, modern algorithms; validated with sshd -t and kept only when a fresh connection works.',
    default: 'true',
  }),
  'ssh-root-login': choice({
    description: "sshd's PermitRootLogin: prohibit-password (keys only) or no.",
    default: 'prohibit-password',
    choices: ['prohibit-password', 'no'] as const,
  }),
  'deploy-user': pattern({
    description:
      'Optional deploy user for the actions (ssh-user): gets deploy-user-keys and sudo for exactly the command the actions run. Empty: none.',
    default: '',
    regex: /^(|[a-z_][a-z0-9_-]{0,31})$/,
    reserved: {
      names: SYSTEM_USERS,
      why: 'a system account (the deploy user gets a login, SSH keys and sudo)',
    },
    expected: 'a Unix user name of its own (not root or a system account), or empty',
  }),
  'deploy-user-keys': custom<string[]>(
    { description: 'Public keys (authorized_keys lines) of the deploy user, one a line.', multiline: true },
    { expected: 'authorized_keys lines such as "ssh-ed25519 AAAA... ci@example"' },
    (v) => {
      const lines = splitList(v, false);
      for (const [i, l] of lines.entries()) {
        if (
          !/^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( [ -~]*)?$/.test(
            l,
          )
        )
          return { error: `line ${i + 1} is not a public key line` };
      }
      return lines;
    },
  ),
  // Python
  'python-install': choice({
    description:
      "Where Python comes from: system (the distribution's python3, venv and pip) or pyenv (built from source into /opt/pyenv).",
    default: 'system',
    choices: ['system', 'pyenv'] as const,
  }),
  'python-version': pattern({
    description:
      'Python version: with system, the version python3 must have (empty: whatever it is); with pyenv, the version to build (required).',
    default: '',
    regex: /^(|3\.\d{1,2}(\.\d{1,2})?)$/,
    expected: 'a version such as 3.12 or 3.12.4, or empty',
  }),
  // App tree and services
  env: envField(
    "The app's shared .env (KEY=value lines), typically a secret; written as given, atomically, mode 600, owned by the app user, at {app-root}/.env. Each release deployed without an env of its own gets a copy of it: a change reaches the services with the next deploy. " +
      'The services read it the way systemd reads an EnvironmentFile, and so do the import check and migrations. Empty: .env is left as it is.',
  ),
  // nginx and TLS
  nginx: bool({
    description:
      "nginx with the standard's site: 80 to 443, TLS, proxy to the app, WebSocket upgrade, static files, security headers.",
    default: 'true',
  }),
  'static-dir': directory({
    description:
      'Directory nginx serves /static/ from, e.g. {app-root}/current/static. Empty: none. ' +
      "Inside app-root only below current/, releases/<id>/ or shared/ (never app-root's .env), and never the backups.",
    optional: true,
    example: '/opt/{app}/current/static',
  }),
  domains: custom<string[]>(
    {
      description:
        'Domain names of the site, newline- or comma-separated; the first names the certificate. Empty: HTTP only, no TLS.',
      multiline: true,
    },
    { expected: 'distinct domain names such as "shop.example.com, www.shop.example.com"' },
    (v) => {
      const items = splitList(v).map((d) => d.toLowerCase());
      for (const [i, d] of items.entries()) {
        if (!DOMAIN.test(d)) return { error: `${quote(d)} is not a domain name` };
        if (items.indexOf(d) < i)
          return { error: `${quote(d)} is listed twice (names are compared in lower case)` };
      }
      return items;
    },
  ),
  'acme-email': pattern({
    description: 'Contact e-mail for the ACME account (required with domains).',
    default: '',
    regex: /^(|[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})$/,
    expected: 'an e-mail address',
  }),
  'acme-server': url({
    description: 'ACME directory URL certbot uses.',
    default: 'https://acme-v02.api.letsencrypt.org/directory',
    https: true,
  }),
  'acme-ca-bundle': custom<string>(
    {
      description:
        "PEM certificates certbot trusts for the ACME server (for a private or test ACME server such as pebble). Empty: the system's trust store.",
      multiline: true,
    },
    { expected: 'PEM certificates (-----BEGIN CERTIFICATE-----)' },
    (v) => {
      const t = v.replace(/\r\n?/g, '\n').trim();
      if (!t) return '';
      if (!/^(-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\s*)+$/.test(t))
        return { error: 'is not a list of PEM certificates' };
      return t + '\n';
    },
  ),
  // PostgreSQL
  postgresql: bool({
    description: 'PostgreSQL: database and user for the app, local access, daily backups.',
    default: 'true',
  }),
  'db-name': pattern({
    description: "The app's database.",
    default: '{app}',
    regex: SQL_NAME,
    reserved: POSTGRES_DATABASES,
    expected:
      'lowercase letters, digits, _ and -, starting with a letter or _; not postgres, template0 or template1',
  }),
  'db-user': pattern({
    description: "The app's database role: it owns the database and what the app creates in it.",
    default: '{app}',
    regex: SQL_NAME,
    reserved: ROLE_RESERVED,
    expected: ROLE_EXPECTED,
  }),
  'db-login-user': pattern({
    description:
      'The role the app logs in as with db-password. Empty: db-user. Another name makes a login role that acts as db-user ' +
      "(a member of it whose sessions start with SET ROLE db-user, so whatever it creates is db-user's). " +
      'Rotate db-password by alternating between db-user and such a role; see db-previous-user.',
    default: '',
    regex: OPTIONAL_SQL_NAME,
    reserved: ROLE_RESERVED,
    expected: `empty, or ${ROLE_EXPECTED}`,
  }),
  'db-previous-user': pattern({
    description:
      "While rotating db-password: the role the app's running services log in as now. Its password is left as it is until " +
      'the services run as db-login-user: deploy, then provision again without it, which takes that password away. ' +
      "Empty: of the app's roles, only db-login-user keeps a password.",
    default: '',
    regex: OPTIONAL_SQL_NAME,
    reserved: ROLE_RESERVED,
    expected: `empty, or ${ROLE_EXPECTED}`,
  }),
  'db-password': password({
    description:
      "Password of db-login-user (scram-sha-256). Empty: no password, the app connects over the local socket as the app user's peer. " +
      "Provision refuses to change or remove a password the app's running services log in with (PostgreSQL keeps one password per role: " +
      'a change would fail their next connection); rotate it with db-login-user and db-previous-user.',
  }),
  'db-remote-cidrs': custom<string[]>(
    {
      description:
        'Networks allowed to reach PostgreSQL remotely, over SSL only (hostssl, scram-sha-256), also opened in ufw. Empty: local only.',
      multiline: true,
    },
    { expected: 'CIDR networks such as 10.0.0.0/8 or fd00::/8 (prefix up to 32 for IPv4, 128 for IPv6)' },
    (v) => {
      const networks: string[] = [];
      for (const c of splitList(v)) {
        const r = parseCidr(c);
        if (typeof r !== 'string') return r;
        networks.push(r);
      }
      return networks;
    },
  ),
  'backup-dir': directory({
    description: 'Directory of the daily PostgreSQL backups (root only, mode 700), outside app-root.',
    default: '/var/backups/metalship/{app}',
    example: '/var/backups/metalship/{app}',
  }),
  'backup-keep-days': int({ description: 'Days backups are kept.', default: '30', min: 1, max: 3650 }),
  'backup-schedule': pattern({
    description: 'When the daily backup runs: a systemd OnCalendar expression.',
    default: 'daily',
    regex: /^[A-Za-z0-9*:.,~/ -]{1,100}$/,
    expected: 'an OnCalendar expression such as "daily" or "*-*-* 03:15:00"',
  }),
  // Redis
  redis: bool({
    description:
      'Redis: loopback only (on a redis host, roles=redis, also its private address, over TLS only with a certificate provision makes there and writes on each app host as /etc/metalship/{app}-redis-ca.pem), an ACL user for the app without dangerous commands, the default user off, maxmemory with allkeys-lru, appendonly.',
    default: 'true',
  }),
  'redis-user': pattern({
    description: "The app's Redis ACL user.",
    default: '{app}',
    regex: /^[a-z_][a-z0-9_-]{0,62}$/,
    reserved: {
      names: ['default', 'metalship-admin'],
      why: "Redis's default user, which provision turns off, or metalship's own, which loads ACL changes without a restart",
    },
    expected: 'lowercase letters, digits, _ and -, not default or metalship-admin',
  }),
  'redis-password': password({
    description:
      "Password of the app's Redis user (required with redis: true). Provision refuses to change it while the app's running services log in with the old one; rotate it with redis-previous-password.",
  }),
  'redis-previous-password': password({
    description:
      'While rotating the Redis password: the old one, still accepted beside redis-password until the services run with the new one (deploy it, then provision again without this). Empty: only redis-password is accepted.',
  }),
  'redis-maxmemory': pattern({
    description: "Redis maxmemory, e.g. 256mb or 2gb. Empty: redis-memory-percent of the host's RAM.",
    default: '',
    regex: /^(|\d{1,6}(kb|mb|gb))$/,
    expected: 'a size such as 256mb or 2gb, or empty',
  }),
  'redis-memory-percent': int({
    description: "Share of the host's RAM Redis may use when redis-maxmemory is empty.",
    default: '25',
    min: 1,
    max: 90,
    unit: 'percent',
  }),
  // Logs and monitoring
  'log-rotation': bool({
    description:
      "30 days of the app's logs: its services' journal (their own namespace) and logrotate for shared/logs (daily, compressed after a day). nginx's logs of the site are rotated alike whatever this says.",
    default: 'true',
  }),
  'health-ping-url': url({
    description:
      'Optional URL called every minute by a systemd timer while the app answers health-ping-path (Healthchecks.io style).',
  }),
  'health-ping-path': pattern({
    description:
      "The app's endpoint the health ping checks before each ping: the standard's monitoring endpoint, a deep check.",
    default: '/health',
    regex: /^\/[A-Za-z0-9._~/?&=%-]*$/,
    expected: 'a path beginning with /, e.g. /health',
  }),
  // Alerts
  'alert-webhook': url({
    description:
      'Optional webhook that gets each alert as a POST of JSON {host, app, kind, detail, time}: a failed backup (kind backup), a failed unit of the app or of metalship (unit), ' +
      'and from hourly checks a full disk (disk), a certificate near expiry (certificate), a restore test that stopped (restore-test). A secret (URLs carry tokens): kept root-only on the host, never on a command line. Empty: no alerts.',
    secret: true,
  }),
  'alert-heartbeat-url': url({
    description:
      'Optional heartbeat URL (Healthchecks.io style) called after each hourly check has run, so that checks that stop running are noticed. A secret, kept like alert-webhook.',
    secret: true,
  }),
  'alert-disk-percent': int({
    description: 'Alert when a filesystem of /, app-root or backup-dir is more than this full.',
    default: '90',
    min: 1,
    max: 99,
    unit: 'percent',
  }),
  'alert-certificate-days': int({
    description: "Alert when the site's certificate expires within this many days (certbot renews at 30).",
    default: '14',
    min: 1,
    max: 365,
    unit: 'days',
  }),
  'alert-restore-test-days': int({
    description:
      'Alert when the last successful restore test (backup-verify) on this host is older than this, or none is recorded and backups are older.',
    default: '35',
    min: 1,
    max: 3650,
    unit: 'days',
  }),
  'node-exporter': bool({ description: 'Install Prometheus node_exporter.', default: 'false' }),
  'node-exporter-listen': custom<string>(
    {
      description:
        "node_exporter's listen address (open its port with firewall-allow to scrape from outside).",
      default: '127.0.0.1:9100',
    },
    { expected: 'address:port such as 127.0.0.1:9100, [::1]:9100 or :9100 (port 1 to 65535)' },
    parseListen,
  ),
} satisfies Record<string, Field>;
