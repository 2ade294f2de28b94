// The provision action's own inputs: what a bare server is converged to. Each
// part of the standard can be switched off; secrets are flagged and masked.

import { parse as parseDotenv } from 'dotenv';
import { bool, choice, custom, int, pattern, splitList, text, type Field } from './fields.js';
import { ROLES, type Role } from './hosts.js';

/** A dotenv key: letters, digits and _, not starting with a digit. */
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface DotenvText {
  /** The text written to .env (line endings normalised, ending in a newline); '' when not given. */
  text: string;
  /** The parsed values (masked in logs, each of them). */
  values: Record<string, string>;
}

/** Whether a line of a quoted value holds its closing quote (in double quotes, not one escaped by a backslash). */
function closesQuote(text: string, quote: string): boolean {
  for (let k = 0; k < text.length; k++) {
    if (quote === '"' && text[k] === '\\') k++;
    else if (text[k] === quote) return true;
  }
  return false;
}

/**
 * Validates dotenv text line by line (quoted values may span lines). Errors name
 * the line and at most the key, never a value: the text is a secret.
 */
export function parseEnvText(v: string): DotenvText | { error: string } {
  const normalised = v.replace(/\r\n?/g, '\n');
  if (!normalised.trim()) return { text: '', values: {} };
  const lines = normalised.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) {
      return {
        error: `line ${i + 1} is not KEY=value (its content is not shown: the input is a secret)`,
      };
    }
    const key = line
      .slice(0, eq)
      .trim()
      .replace(/^export\s+/, '');
    if (!ENV_KEY.test(key)) {
      return {
        error: `line ${i + 1}: '${key.slice(0, 40)}' is not a valid key (letters, digits and _, not starting with a digit)`,
      };
    }
    const value = line.slice(eq + 1).trimStart();
    const quote = value[0];
    if (quote === '"' || quote === "'" || quote === '`') {
      // A quoted value ends at its closing quote, possibly on a later line. In
      // double quotes a backslash escapes the next character (\" is no end).
      let j = i;
      let rest = value.slice(1);
      while (!closesQuote(rest, quote)) {
        j++;
        if (j >= lines.length)
          return { error: `line ${i + 1}: the value of ${key} opens a ${quote} quote that is never closed` };
        rest = lines[j]!;
      }
      i = j;
    }
  }
  const values = parseDotenv(normalised);
  return { text: normalised.endsWith('\n') ? normalised : normalised + '\n', values };
}

/** A port rule for ufw: 8080, 8080/tcp, 60000:61000/udp. */
export function parsePorts(v: string): string[] | { error: string } {
  const items = splitList(v);
  for (const p of items) {
    const m = /^(\d{1,5})(?::(\d{1,5}))?(?:\/(tcp|udp))?$/.exec(p);
    if (!m || Number(m[1]) < 1 || Number(m[1]) > 65535 || (m[2] && Number(m[2]) > 65535))
      return { error: `'${p.slice(0, 40)}' is not a port, range or port/protocol` };
  }
  return items.map((p) => (p.includes('/') ? p : `${p}/tcp`));
}

const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$/;
const CIDR = /^(\d{1,3}(\.\d{1,3}){3}\/\d{1,2}|[0-9a-f:]+\/\d{1,3})$/i;

const SQL_NAME = /^([a-z_][a-z0-9_-]{0,62}|\{app\})$/;

export const provisionInputs = {
  check: bool({
    description: 'Report what would change on each host and change nothing.',
    default: 'false',
  }),
  limit: custom<string[]>(
    {
      description:
        'Provision only these hosts: host names as written in hosts, or roles (api, worker, scheduler, migrate, lb), comma-separated. ' +
        'The others are not contacted, but still count (a load balancer lists every api host). Empty: all hosts.',
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
    { description: 'Extra ports to open, newline- or comma-separated: 8080, 8080/tcp, 60000:61000/udp.' },
    { expected: 'ports such as "8080, 51820/udp"' },
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
    expected: 'a Unix user name, or empty',
  }),
  'deploy-user-keys': custom<string[]>(
    { description: 'Public keys (authorized_keys lines) of the deploy user, one a line.' },
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
  env: custom<DotenvText>(
    {
      description:
        "The app's .env (KEY=value lines), typically a secret; written as given, atomically, mode 600, owned by the app user. The services read it the way systemd reads an EnvironmentFile, and so do the import check and migrations: a quoted value may span lines; in double quotes, a backslash before a double quote, a backslash, $ or a backquote makes it literal; nothing is expanded. Empty: .env is left as it is.",
      secret: true,
      revealErrors: true,
    },
    { expected: 'KEY=value lines, keys of letters, digits and _' },
    (v) => parseEnvText(v),
  ),
  // nginx and TLS
  nginx: bool({
    description:
      "nginx with the standard's site: 80 to 443, TLS, proxy to the app, WebSocket upgrade, static files, security headers.",
    default: 'true',
  }),
  'static-dir': custom<string>(
    { description: 'Directory nginx serves /static/ from, e.g. {app-root}/current/static. Empty: none.' },
    { expected: 'an absolute path without .. or spaces' },
    (v) => {
      if (!v) return '';
      if (!/^\/[A-Za-z0-9._/-]+$/.test(v) || v.split('/').includes('..'))
        return { error: `'${v.slice(0, 60)}' is not an absolute path of plain characters` };
      return v.replace(/\/+$/, '');
    },
  ),
  domains: custom<string[]>(
    {
      description:
        'Domain names of the site, newline- or comma-separated; the first names the certificate. Empty: HTTP only, no TLS.',
    },
    { expected: 'domain names such as "shop.example.com, www.shop.example.com"' },
    (v) => {
      const items = splitList(v).map((d) => d.toLowerCase());
      for (const d of items)
        if (!DOMAIN.test(d)) return { error: `'${d.slice(0, 60)}' is not a domain name` };
      return items;
    },
  ),
  'acme-email': pattern({
    description: 'Contact e-mail for the ACME account (required with domains).',
    default: '',
    regex: /^(|[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})$/,
    expected: 'an e-mail address',
  }),
  'acme-server': custom<string>(
    {
      description: 'ACME directory URL certbot uses.',
      default: 'https://acme-v02.api.letsencrypt.org/directory',
    },
    { expected: 'an https:// URL' },
    (v) => {
      try {
        const u = new URL(v);
        if (u.protocol !== 'https:') return { error: `'${v.slice(0, 60)}' is not https` };
        return u.toString();
      } catch {
        return { error: `'${v.slice(0, 60)}' is not a URL` };
      }
    },
  ),
  'acme-ca-bundle': custom<string>(
    {
      description:
        "PEM certificates certbot trusts for the ACME server (for a private or test ACME server such as pebble). Empty: the system's trust store.",
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
    expected: 'lowercase letters, digits, _ and -, starting with a letter or _',
  }),
  'db-user': pattern({
    description: "The app's database role.",
    default: '{app}',
    regex: SQL_NAME,
    expected: 'lowercase letters, digits, _ and -, starting with a letter or _',
  }),
  'db-password': text({
    description:
      "Password of the database role (scram-sha-256). Empty: no password, the app connects over the local socket as the app user's peer.",
    secret: true,
    max: 1024,
  }),
  'db-remote-cidrs': custom<string[]>(
    {
      description:
        'Networks allowed to reach PostgreSQL remotely, over SSL only (hostssl, scram-sha-256), also opened in ufw. Empty: local only.',
    },
    { expected: 'CIDR networks such as 10.0.0.0/8' },
    (v) => {
      const items = splitList(v);
      for (const c of items) if (!CIDR.test(c)) return { error: `'${c.slice(0, 60)}' is not a CIDR network` };
      return items;
    },
  ),
  'backup-dir': custom<string>(
    { description: 'Directory of the daily PostgreSQL backups.', default: '/var/backups/metalship/{app}' },
    { expected: 'an absolute path without .. or spaces' },
    (v) => {
      if (
        !/^\/[A-Za-z0-9._/-]+$/.test(v) ||
        v.split('/').includes('..') ||
        v.split('/').filter(Boolean).length < 2
      )
        return { error: `'${v.slice(0, 60)}' is not an absolute directory of its own` };
      return v.replace(/\/+$/, '');
    },
  ),
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
      'Redis: loopback only, an ACL user for the app without dangerous commands, the default user off, maxmemory with allkeys-lru, appendonly.',
    default: 'true',
  }),
  'redis-user': pattern({
    description: "The app's Redis ACL user.",
    default: '{app}',
    regex: /^([a-z_][a-z0-9_-]{0,62}|\{app\})$/,
    expected: 'lowercase letters, digits, _ and -',
  }),
  'redis-password': text({
    description: "Password of the app's Redis user (required with redis: true).",
    secret: true,
    max: 1024,
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
    description: 'logrotate for shared/logs: daily, compressed after a day, 30 days kept.',
    default: 'true',
  }),
  'health-ping-url': custom<string>(
    {
      description:
        'Optional URL called every minute by a systemd timer while the app answers its health path (Healthchecks.io style).',
    },
    { expected: 'an http:// or https:// URL' },
    (v) => {
      if (!v) return '';
      try {
        const u = new URL(v);
        if (u.protocol !== 'http:' && u.protocol !== 'https:') return { error: 'is not http(s)' };
        return u.toString();
      } catch {
        return { error: `'${v.slice(0, 60)}' is not a URL` };
      }
    },
  ),
  'node-exporter': bool({ description: 'Install Prometheus node_exporter.', default: 'false' }),
  'node-exporter-listen': pattern({
    description: "node_exporter's listen address (open its port with firewall-allow to scrape from outside).",
    default: '127.0.0.1:9100',
    regex: /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:]+\])?:\d{1,5}$/,
    expected: 'address:port such as 127.0.0.1:9100 or :9100',
  }),
} satisfies Record<string, Field>;

/** Cross-input checks of provision, with messages naming the inputs. */
export function provisionChecks(s: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const hosts = (s.hosts as { label: string }[] | undefined) ?? [];
  for (const item of (s.limit as string[] | undefined) ?? []) {
    if (!ROLES.includes(item as Role) && !hosts.some((h) => h.label === item))
      problems.push(
        `Input 'limit': '${item}' is neither a host of the hosts input (as written there) nor a role; expected one of ${[...hosts.map((h) => h.label), ...ROLES].join(', ')}.`,
      );
  }
  if ((s.domains as string[] | undefined)?.length && !s['acme-email'])
    problems.push("Input 'acme-email' is required when 'domains' is set: expected an e-mail address.");
  if (s['python-install'] === 'pyenv' && !s['python-version'])
    problems.push(
      "Input 'python-version' is required with python-install: pyenv: expected a version such as 3.12.4.",
    );
  if (s.redis === true && !s['redis-password'])
    problems.push("Input 'redis-password' is required with redis: true: expected the app's Redis password.");
  if (s['deploy-user'] && !(s['deploy-user-keys'] as string[]).length)
    problems.push("Input 'deploy-user-keys' is required with deploy-user: expected authorized_keys lines.");
  if (s['deploy-user'] && s['deploy-user'] === s['app-user'])
    problems.push("Input 'deploy-user' is the app user; expected another user (the app user has no login).");
  return problems;
}
