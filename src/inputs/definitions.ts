// The inputs every action shares, defined once; src/inputs/actions.ts puts them
// together per action. action.yml files are generated from those definitions.

import {
  bool,
  checkCommand,
  checkRelativePath,
  custom,
  int,
  pattern,
  splitList,
  text,
  type Field,
} from './fields.js';
import { parseHosts, parseAddress, type HostSpec } from './hosts.js';
import { parseKnownHosts, type KnownHostEntry } from './known-hosts.js';

export const APP_NAME = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$/;

/** Inputs every host-touching action shares. */
export const connectionInputs = {
  hosts: custom<HostSpec[]>(
    {
      description:
        'Hosts to act on, newline- or comma-separated: host, host:port, user@host:port or [ipv6]:port. ' +
        'Optionally, one host per line then, `roles=api,worker,scheduler,migrate` (hosts without roles run api and worker), ' +
        '`roles=lb` for an nginx load balancer in front of the api hosts (provision sets it up; deploys take each batch out of its rotation), ' +
        'and `upstream=addr:port`: where the load balancer reaches that host (default: its address, port 80).',
      required: true,
    },
    { expected: 'host names or IP addresses, e.g. "web1.example.com, deploy@10.0.0.5:2222"' },
    (v) => {
      const r = parseHosts(v);
      return typeof r === 'string' ? { error: r } : r;
    },
  ),
  'ssh-user': pattern({
    description: 'SSH user for hosts that do not name one. Non-root users need passwordless sudo.',
    default: 'root',
    regex: /^[a-z_][a-z0-9_-]{0,31}$/,
    expected: 'a Unix user name (lowercase letters, digits, _ and -)',
  }),
  'ssh-key': custom<string>(
    {
      description: 'Private SSH key (OpenSSH or PEM format), typically a secret.',
      required: true,
      secret: true,
    },
    { expected: 'a private key beginning with -----BEGIN ... PRIVATE KEY-----' },
    (v) => {
      const key = v.replace(/\r\n?/g, '\n').trim() + '\n';
      if (
        !/^-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\n[\s\S]+\n-----END [A-Z0-9 ]*PRIVATE KEY-----\n$/.test(key)
      ) {
        return { error: 'is not a private key (a public key or a fingerprint is not enough)' };
      }
      return key;
    },
  ),
  'ssh-key-passphrase': text({ description: 'Passphrase of ssh-key, if it has one.', secret: true }),
  'known-hosts': custom<KnownHostEntry[] | null>(
    {
      description:
        'Pinned host keys, as OpenSSH known_hosts lines (ssh-keyscan output checked out of band). ' +
        'Required unless insecure-accept-any-host-key is true.',
    },
    { expected: 'known_hosts lines: "host key-type base64-key"' },
    (v) => {
      if (!v.trim()) return null;
      const r = parseKnownHosts(v);
      return typeof r === 'string' ? { error: r } : r;
    },
  ),
  'insecure-accept-any-host-key': bool({
    description: 'Skip host key verification (logs a warning). Only for throwaway hosts.',
    default: 'false',
  }),
  'jump-host': custom<ReturnType<typeof parseAddress> | null>(
    {
      description: 'Optional bastion to connect through: user@host:port. Uses the same key and known-hosts.',
    },
    { expected: 'user@host or user@host:port' },
    (v) => {
      if (!v.trim()) return null;
      const r = parseAddress(v.trim());
      return typeof r === 'string' ? { error: r } : r;
    },
  ),
  app: pattern({
    description: 'Application name: names /opt/{app}, the app user and the systemd units.',
    required: true,
    regex: APP_NAME,
    expected: '2-32 lowercase letters, digits and hyphens, starting with a letter, e.g. "shop-api"',
  }),
  'app-root': custom<string>(
    { description: 'Application directory on the hosts.', default: '/opt/{app}' },
    { expected: 'an absolute path such as /opt/{app}, without .. or spaces' },
    (v) => {
      if (!v.startsWith('/')) return { error: `'${v.slice(0, 60)}' is not absolute` };
      if (v.split('/').some((s) => s === '..' || s === '.'))
        return { error: `'${v.slice(0, 60)}' contains . or ..` };
      if (!/^[A-Za-z0-9._/{}-]+$/.test(v))
        return { error: `'${v.slice(0, 60)}' contains characters other than letters, digits and ._/-` };
      if (v.replace(/\/+$/, '').split('/').filter(Boolean).length < 2) {
        return { error: `'${v}' is too close to / (use a directory of its own, e.g. /opt/{app})` };
      }
      return v.replace(/\/+$/, '');
    },
  ),
  'connect-timeout': int({
    description: 'Seconds to wait for each SSH connection.',
    default: '20',
    min: 1,
    max: 300,
    unit: 'seconds',
  }),
  'command-idle-timeout': int({
    description: 'Seconds a remote command may run without printing anything before it is stopped.',
    default: '600',
    min: 5,
    max: 86400,
    unit: 'seconds',
  }),
  'command-timeout': int({
    description: 'Seconds a remote command may run in total.',
    default: '3600',
    min: 5,
    max: 86400,
    unit: 'seconds',
  }),
  'lock-timeout': int({
    description: 'Seconds to wait for another deploy of this app on a host to finish before failing.',
    default: '300',
    min: 0,
    max: 86400,
    unit: 'seconds',
  }),
} satisfies Record<string, Field>;

const commandField = (description: string, def: string) =>
  custom<string[]>(
    { description, default: def },
    { expected: 'a command line of plain words, e.g. "python -m worker"' },
    (v) => checkCommand(v),
  );

/** How the app's processes run: shared by release (import check), switch, rollback and deploy. */
export const serviceInputs = {
  'app-user': pattern({
    description:
      'Unix user the services run as (created when missing, without a login shell). Default: the app name.',
    default: '{app}',
    regex: /^([a-z_][a-z0-9_-]{0,31}|\{app\})$/,
    expected: 'a Unix user name (not root)',
  }),
  'app-module': pattern({
    description: 'The ASGI application, module:attribute, served by uvicorn.',
    default: 'main:app',
    regex: /^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$/,
    expected: 'module:attribute, e.g. main:app or myproj.asgi:application',
  }),
  'uvicorn-args': commandField('Extra uvicorn arguments, e.g. "--workers 2".', ''),
  'worker-command': commandField(
    'Background worker command, run in the release with the venv first on PATH. Empty: no worker.',
    'taskiq worker tasks.broker:broker',
  ),
  'scheduler-command': commandField(
    'Scheduler command (exactly one runs, on the first host or the host with the scheduler role). Empty: no scheduler.',
    'taskiq scheduler tasks.scheduler:scheduler',
  ),
  'health-path': pattern({
    description:
      'Readiness endpoint of the app, checked on each host before it gets traffic and after a switch.',
    default: '/health/ready',
    regex: /^\/[A-Za-z0-9._~/?&=%-]*$/,
    expected: 'a path beginning with /, e.g. /health/ready',
  }),
  'ready-timeout': int({
    description: 'Seconds a newly started api instance has to become ready before the switch is abandoned.',
    default: '60',
    min: 1,
    max: 3600,
    unit: 'seconds',
  }),
  'batch-size': int({
    description:
      'Hosts switched at a time in a rolling switch. Each batch is taken out of the load balancer (roles=lb hosts), switched, verified and put back before the next; a failing batch stops the rollout and returns every switched host to its previous release.',
    default: '1',
    min: 1,
    max: 1000,
    unit: 'hosts',
  }),
  'server-name': pattern({
    description:
      'nginx server_name of the minimal HTTP site the deploy creates when no site exists yet (provision replaces it).',
    default: '_',
    regex: /^(_|[A-Za-z0-9.*-]+( [A-Za-z0-9.*-]+)*)$/,
    expected: 'host names separated by spaces, or _',
  }),
} satisfies Record<string, Field>;

export const releaseInputs = {
  source: custom<string>(
    {
      description: 'Directory holding the application code: relative to the workspace, or absolute.',
      default: '.',
    },
    { expected: 'a directory path without .., e.g. . or app/' },
    (v) => {
      if (v === '.' || v === './') return '.';
      const trimmed = v.replace(/\/+$/, '');
      const bad = checkRelativePath(trimmed.startsWith('/') ? trimmed.slice(1) : trimmed);
      return bad ? { error: bad } : trimmed;
    },
  ),
  exclude: custom<string[]>(
    {
      description:
        'Newline-separated glob patterns of files not to upload (.git, node_modules, __pycache__ and .venv never are).',
      default: '',
    },
    { expected: 'glob patterns, one per line, e.g. "tests/**"' },
    (v) => {
      const items = splitList(v, false);
      for (const p of items)
        if (!/^[A-Za-z0-9._/*?@+-]+$/.test(p))
          return { error: `pattern '${p.slice(0, 60)}' has odd characters` };
      return items;
    },
  ),
  'release-id': pattern({
    description: 'Release directory name. Default: the UTC time as YYYYMMDD_HHMMSS (made unique if taken).',
    default: '',
    regex: /^(|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$/,
    expected: 'letters, digits, ., _ and -, e.g. 20250127_120000',
  }),
  'keep-releases': int({
    description: 'Good releases to keep (current and the rollback target are always kept).',
    default: '5',
    min: 2,
    max: 100,
  }),
  requirements: custom<string>(
    {
      description: 'pip requirements file in the source. Empty: no dependencies installed.',
      default: 'requirements.txt',
    },
    { expected: 'a relative path such as requirements.txt' },
    (v) => {
      if (v === '') return '';
      const bad = checkRelativePath(v);
      return bad ? { error: bad } : v;
    },
  ),
  'shared-paths': custom<string[]>(
    {
      description:
        'Paths in the release linked to persistent ones: .env to {app-root}/.env, others to {app-root}/shared/<path>. Newline- or comma-separated.',
      default: 'logs\nuploads\n.env',
    },
    { expected: 'relative paths, e.g. "logs, uploads, .env"' },
    (v) => {
      const items = splitList(v);
      for (const p of items) {
        const bad = checkRelativePath(p.replace(/\/+$/, ''));
        if (bad) return { error: bad };
      }
      return items.map((p) => p.replace(/\/+$/, ''));
    },
  ),
  python: pattern({
    description: "Python interpreter on the hosts used to build each release's virtualenv.",
    default: 'python3',
    regex: /^(python3(\.\d+)?|\/[A-Za-z0-9._/-]+)$/,
    expected: 'python3, python3.X or an absolute path',
  }),
  'pip-args': commandField('Extra pip install arguments, e.g. "--no-index --find-links /srv/wheels".', ''),
  'system-site-packages': bool({
    description: 'Let the virtualenv see system-wide Python packages.',
    default: 'false',
  }),
  'import-check': bool({
    description: 'Import the app module in the new release before it can be switched to.',
    default: 'true',
  }),
} satisfies Record<string, Field>;

export const verifyInputs = {
  'verify-path': pattern({
    description:
      'Endpoint checked on each host after the switch. Default: health-path. For example /health for a deep check.',
    default: '',
    regex: /^(|\/[A-Za-z0-9._~/?&=%-]*)$/,
    expected: 'a path beginning with /, or empty',
  }),
  url: custom<string>(
    {
      description: 'Optional URL checked from the runner instead of the readiness endpoint on each host.',
      default: '',
    },
    { expected: 'an http:// or https:// URL' },
    (v) => {
      if (!v) return '';
      try {
        const u = new URL(v);
        if (u.protocol !== 'http:' && u.protocol !== 'https:')
          return { error: `'${v.slice(0, 60)}' is not http(s)` };
        return u.toString();
      } catch {
        return { error: `'${v.slice(0, 60)}' is not a URL` };
      }
    },
  ),
  'expect-status': int({
    description: 'HTTP status a healthy answer has.',
    default: '200',
    min: 100,
    max: 599,
  }),
  'expect-body': text({
    description:
      'Text the healthy answer must contain. {release} stands for the release being verified (deploy and rollback).',
    default: '',
    max: 1024,
  }),
  'verify-timeout': int({
    description: 'Seconds to keep checking before declaring the release unhealthy.',
    default: '30',
    min: 1,
    max: 3600,
    unit: 'seconds',
  }),
  'verify-interval': int({
    description: 'Seconds between checks.',
    default: '1',
    min: 1,
    max: 300,
    unit: 'seconds',
  }),
} satisfies Record<string, Field>;

export const switchOnlyInputs = {
  'release-id': pattern({
    description: "The release to switch to (the release action's release-id output).",
    required: true,
    regex: /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/,
    expected: 'a release directory name, e.g. 20250127_120000',
  }),
  'keep-releases': releaseInputs['keep-releases'],
} satisfies Record<string, Field>;

export const rollbackOnlyInputs = {
  'release-id': pattern({
    description: 'Release to roll back to. Default: the newest good release before the current one.',
    default: '',
    regex: /^(|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$/,
    expected: 'a release directory name, e.g. 20250127_120000, or empty',
  }),
  'if-current': pattern({
    description:
      "Undo one deploy: roll back only when this release (the deploy's release-id) is current on the hosts, and do nothing, successfully, when it is not. Empty: always roll back.",
    default: '',
    regex: /^(|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$/,
    expected: 'a release directory name, e.g. 20250127_120000, or empty',
  }),
} satisfies Record<string, Field>;

const migrateHostField = pattern({
  description:
    'The one host that runs migrations (as written in hosts). Default: the host with the migrate role, else the first.',
  default: '',
  regex: /^[A-Za-z0-9_.:@[\]-]{0,300}$/,
  expected: 'one of the hosts, as written in the hosts input',
});
const revisionCommandField = commandField(
  'Command printing the schema revision (first word of its last line), run before and after migrating.',
  'alembic current',
);
const backupKeepField = int({
  description: 'Pre-migration backups to keep in /var/backups/metalship/{app}/pre-migrate.',
  default: '10',
  min: 1,
  max: 1000,
});

/** The migrate action's own inputs. */
export const migrateInputs = {
  'release-id': switchOnlyInputs['release-id'],
  command: commandField(
    "Migration command, run in the release with its venv first on PATH and the app's .env, as the app user.",
    'alembic upgrade head',
  ),
  'revision-command': revisionCommandField,
  backup: bool({
    description: 'Take a pg_dump -Fc of the app database (DATABASE_URL in .env) before migrating.',
    default: 'true',
  }),
  'backup-keep': backupKeepField,
  'migrate-host': migrateHostField,
} satisfies Record<string, Field>;

/** How the deploy pipeline migrates (off unless migrate: true). */
export const deployMigrateInputs = {
  migrate: bool({ description: 'Run database migrations between release and switch.', default: 'false' }),
  'migrate-command': migrateInputs.command,
  'revision-command': revisionCommandField,
  'migrate-backup': bool({ description: 'Back the database up before migrating.', default: 'true' }),
  'backup-keep': backupKeepField,
  'migrate-host': migrateHostField,
} satisfies Record<string, Field>;

/** The rollback's database downgrade (off unless migrate-down: true). */
export const rollbackMigrateInputs = {
  'migrate-down': bool({
    description:
      "Before switching back, downgrade the schema to the target release's recorded revision, running the newer release's code. Data written since may be lost.",
    default: 'false',
  }),
  'downgrade-command': commandField(
    'Downgrade command; {revision} stands for the target revision.',
    'alembic downgrade {revision}',
  ),
  'revision-command': revisionCommandField,
  backup: bool({ description: 'Back the database up before downgrading.', default: 'true' }),
  'backup-keep': backupKeepField,
  'migrate-host': migrateHostField,
} satisfies Record<string, Field>;

export const deployOnlyInputs = {
  'restore-proof-days': int({
    description:
      'Warn when the backups in backup-dir on the migrate host were last proven to restore (backup-verify) longer ago than this. 0: never warn.',
    default: '45',
    min: 0,
    max: 3650,
    unit: 'days',
  }),
  'rollback-on-failure': bool({
    description:
      'When verification fails after the switch, switch back to the previous release (the job still fails).',
    default: 'true',
  }),
} satisfies Record<string, Field>;

export interface OutputDef {
  description: string;
}

export const commonOutputs = {
  results: { description: "JSON array with one object per host: host, ok, error and the action's figures." },
};

export interface ActionDef {
  name: string;
  title: string;
  description: string;
  inputs: Record<string, Field>;
  outputs: Record<string, OutputDef>;
}

const SQL_NAME = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$/;

const oneHost = (description: string, required: boolean, def?: string) =>
  custom<HostSpec | null>(
    { description, required, ...(def !== undefined ? { default: def } : {}) },
    { expected: 'one host: host, host:port, user@host:port or [ipv6]:port' },
    (v) => {
      if (!v.trim()) return null;
      const r = parseAddress(v.trim());
      return typeof r === 'string' ? { error: r } : { ...r, roles: [] };
    },
  );

/** The restore test's inputs (backup-verify), beside the connection inputs without `hosts`. */
export const backupVerifyInputs = {
  'backup-host': oneHost('The host that holds the backups (and the production database).', true),
  'backup-dir': custom<string>(
    {
      description: "Directory of the backups on backup-host (provision's backup directory).",
      default: '/var/backups/metalship/{app}',
    },
    { expected: 'an absolute path without .. or spaces' },
    (v) => {
      if (!v.startsWith('/') || v.split('/').some((s) => s === '..' || s === '.'))
        return { error: `'${v.slice(0, 60)}' is not an absolute path without . and ..` };
      if (!/^[A-Za-z0-9._/-]+$/.test(v))
        return { error: `'${v.slice(0, 60)}' contains characters other than letters, digits and ._/-` };
      return v.replace(/\/+$/, '') || '/';
    },
  ),
  'backup-file': custom<string>(
    {
      description:
        'One backup to verify instead of the newest: the absolute path of a .dump on backup-host (its manifest beside it).',
      default: '',
    },
    {
      expected:
        'an absolute path ending in .dump, e.g. /var/backups/metalship/shop/shop_20250101T020000Z_daily.dump',
    },
    (v) => {
      if (!v) return '';
      if (!v.startsWith('/') || !v.endsWith('.dump') || v.split('/').some((s) => s === '..'))
        return { error: `'${v.slice(0, 80)}' is not an absolute path ending in .dump` };
      if (!/^[A-Za-z0-9._/-]+$/.test(v))
        return { error: `'${v.slice(0, 60)}' contains characters other than letters, digits and ._/-` };
      return v;
    },
  ),
  'restore-host': oneHost(
    'The test environment the backup is restored on. Default: backup-host itself (into a scratch database).',
    false,
  ),
  database: pattern({
    description:
      'The production database whose backups are verified (never touched: the restore goes to a scratch database).',
    default: '{app}',
    regex: SQL_NAME,
    expected: 'a database name of letters, digits, _ and - (at most 63)',
  }),
  'scratch-database': pattern({
    description:
      'Name of the scratch database the backup is restored into, dropped afterwards. An existing database of that name that backup-verify did not create is refused.',
    default: 'metalship_verify',
    regex: SQL_NAME,
    expected: 'a database name of letters, digits, _ and - (at most 63)',
  }),
  'max-age-hours': int({
    description:
      "RPO objective: the newest backup may be at most this old. The default fits daily backups (a day plus the timer's random delay).",
    default: '26',
    min: 1,
    max: 8760,
    unit: 'hours',
  }),
  'max-restore-seconds': int({
    description: 'RTO objective: copying, restoring and checking the backup must take at most this long.',
    default: '14400',
    min: 1,
    max: 604800,
    unit: 'seconds',
  }),
  checks: custom<string[]>(
    {
      description:
        'SQL queries run in the restored database, one per line; each must return true (e.g. "SELECT count(*) > 0 FROM orders").',
      default: '',
    },
    { expected: 'SQL queries, one per line, each returning one boolean' },
    (v) => {
      const items = splitList(v, false);
      for (const q of items) {
        if (q.startsWith('\\'))
          return { error: `'${q.slice(0, 60)}' is a psql meta-command, not a SQL query` };
        if (q.length > 4000) return { error: `a check is longer than 4000 characters` };
      }
      return items;
    },
  ),
  smoke: bool({
    description:
      'Start the current release on the restore host against the restored database (on a private socket, with only DATABASE_URL set) and check smoke-path. Skipped, and reported so, when the restore host has no release.',
    default: 'true',
  }),
  'smoke-path': pattern({
    description:
      "Path the smoke test expects a 200 from; it should use the database (the sample app's /health does).",
    default: '/health',
    regex: /^\/[A-Za-z0-9._~/?&=%-]*$/,
    expected: 'a path beginning with /',
  }),
  'smoke-timeout': int({
    description: 'Seconds the started release has to answer smoke-path.',
    default: '60',
    min: 1,
    max: 3600,
    unit: 'seconds',
  }),
  'app-user': serviceInputs['app-user'],
  'app-module': serviceInputs['app-module'],
} satisfies Record<string, Field>;
