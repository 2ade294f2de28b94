// The inputs every action shares, defined once; src/inputs/actions.ts puts them
// together per action. action.yml files are generated from those definitions.

import {
  bool,
  checkCommand,
  choice,
  checkRelativePath,
  custom,
  directory,
  int,
  password,
  pattern,
  quote,
  splitList,
  text,
  url,
  type Field,
  type Reserved,
  type SettingsOf,
} from './fields.js';
import { envField } from './dotenv.js';
import { parseHosts, parseAddress, type HostSpec } from './hosts.js';
import { parseKnownHosts, type KnownHostEntry } from './known-hosts.js';
import { readPrivateKey } from './ssh-key.js';

/** Why a value for one run (a release, a reason) is never read from the config file. */
export const PER_RUN = 'it names something for one run, so it is given as an input';

export const APP_NAME = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$/;

/** `{app}-build` is an app's build user (src/remote/layout.ts): no app, and no app's user, may be named so. */
export const BUILD_USER_SUFFIX: Reserved = {
  names: [],
  suffixes: ['-build'],
  why: "names ending in -build are reserved for apps' build users (another app's build user would then run this one, or read its secrets)",
};

/**
 * Apps name systemd units ({app}.target, {app}-api@.service, ...): names whose
 * units systemd or the distribution already has would replace them.
 */
const SYSTEM_UNIT_NAMES: Reserved = {
  names: [
    'basic',
    'default',
    'emergency',
    'exit',
    'final',
    'getty',
    'graphical',
    'halt',
    'hibernate',
    'hybrid-sleep',
    'initrd',
    'kexec',
    'local-fs',
    'local-fs-pre',
    'multi-user',
    'network',
    'network-online',
    'network-pre',
    'nss-lookup',
    'nss-user-lookup',
    'paths',
    'poweroff',
    'reboot',
    'remote-fs',
    'remote-fs-pre',
    'rescue',
    'rpcbind',
    'shutdown',
    'sigpwr',
    'sleep',
    'slices',
    'smartcard',
    'sockets',
    'sound',
    'suspend',
    'swap',
    'sysinit',
    'system-update',
    'time-set',
    'time-sync',
    'timers',
    'umount',
    'usb',
    'bluetooth',
    'printer',
    'cryptsetup',
    'integritysetup',
    'veritysetup',
    'machines',
    'user',
    'nginx',
    'postgresql',
    'redis',
    'redis-server',
    'ssh',
    'sshd',
    'cron',
    'dbus',
    'ufw',
    'certbot',
    'metalship',
  ],
  prefixes: ['systemd-', 'getty', 'serial-getty', 'user-', 'dbus-', 'metalship-'],
  why: "systemd or the system already has units of that name, which the app's units ({app}.target, {app}-api@.service, ...) would replace",
};

/** Accounts of the system and of the services provision installs: never the app's or the deploy user. */
export const SYSTEM_USERS = [
  'root',
  'daemon',
  'bin',
  'sys',
  'sync',
  'games',
  'man',
  'lp',
  'mail',
  'news',
  'uucp',
  'proxy',
  'www-data',
  'backup',
  'list',
  'irc',
  'gnats',
  'nobody',
  '_apt',
  'messagebus',
  'sshd',
  'syslog',
  'uuidd',
  'tcpdump',
  'polkitd',
  'systemd-network',
  'systemd-resolve',
  'systemd-timesync',
  'systemd-coredump',
  'postgres',
  'redis',
  'nginx',
  'node_exporter',
  'prometheus',
] as const;

/** PostgreSQL's own databases: never an app's, never dropped as a scratch database. */
export const POSTGRES_DATABASES: Reserved = {
  names: ['postgres', 'template0', 'template1'],
  why: "PostgreSQL's own database",
};

/** Inputs every host-touching action shares. */
export const connectionInputs = {
  hosts: custom<HostSpec[]>(
    {
      description:
        'Hosts to act on, newline- or comma-separated: host, host:port, user@host:port or [ipv6]:port. ' +
        'Optionally, one host per line then, `roles=api,worker,scheduler,migrate` (hosts without roles run api and worker), ' +
        '`roles=lb` for an nginx load balancer in front of the api hosts (provision sets it up; a deploy keeps every host in its rotation: a switch drops no request), ' +
        "`roles=db` and/or `roles=redis` for a host of its own with the app's PostgreSQL or Redis (provision sets it up, reachable from the app hosts alone; the deploy path never contacts it), " +
        '`roles=backup` for a host of its own that receives a copy of every daily backup (provision links it to the host that takes them), ' +
        '`upstream=addr:port`: where the load balancer reaches that host (default: its address, port 80), ' +
        "and `private=addr`: the host's IP address on the private network (where app hosts reach the db and redis hosts, and the address those let an app host in from; default: upstream='s address, else the host's). " +
        'IPv4 addresses are written as dotted quads (127.0.0.1, not 127.1); a host may be listed once.',
      required: true,
      multiline: true,
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
      description:
        'Private SSH key (OpenSSH or PEM format), typically a secret. It is read before any host is contacted (with ssh-key-passphrase when encrypted).',
      required: true,
      secret: true,
      // readPrivateKey's messages name lines, never key content.
      revealErrors: true,
      multiline: true,
    },
    { expected: 'a whole private key, from -----BEGIN ... PRIVATE KEY----- to its END line' },
    readPrivateKey,
  ),
  'ssh-key-passphrase': password({ description: 'Passphrase of ssh-key, if it is encrypted.' }),
  'known-hosts': custom<KnownHostEntry[] | null>(
    {
      description:
        'Pinned host keys, as OpenSSH known_hosts lines (ssh-keyscan output checked out of band). ' +
        'Required unless insecure-accept-any-host-key is true.',
      multiline: true,
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
  'jump-host': custom<Exclude<ReturnType<typeof parseAddress>, string> | null>(
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
    reserved: [SYSTEM_UNIT_NAMES, BUILD_USER_SUFFIX],
    expected: '2-32 lowercase letters, digits and hyphens, starting with a letter, e.g. "shop-api"',
  }),
  'app-root': directory({
    description:
      "Application directory on the hosts (made the app user's home; its shared/ is handed to the app user).",
    default: '/opt/{app}',
    example: '/opt/{app}',
  }),
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

/**
 * The command of a unit (worker, scheduler): `none` runs none. The default is none: a command the app lacks (the standard's
 * taskiq in an app without taskiq) would fail its deploy.
 */
const unitCommandField = (description: string, def: string) =>
  custom<string[]>(
    { description, default: def },
    { expected: 'a command line of plain words, e.g. "python -m worker", or none' },
    (v) => (v === 'none' || v === '' ? [] : checkCommand(v)),
  );

/** How the app's processes run: shared by release (import check), switch, rollback and deploy. */
export const serviceInputs = {
  'app-user': pattern({
    description:
      'Unix user the services run as (created when missing; provision removes its login shell). Default: the app name. ' +
      'Not root, a system account or the SSH user.',
    default: '{app}',
    regex: /^[a-z_][a-z0-9_-]{0,31}$/,
    reserved: [
      {
        names: SYSTEM_USERS,
        why: 'a system account (the services must run as an unprivileged user of their own)',
      },
      BUILD_USER_SUFFIX,
    ],
    expected:
      "an unprivileged Unix user of the app's own (not root or a system account such as postgres or www-data)",
  }),
  'app-module': pattern({
    description: 'The ASGI application, module:attribute, served by uvicorn.',
    default: 'main:app',
    regex: /^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$/,
    expected: 'module:attribute, e.g. main:app or myproj.asgi:application',
  }),
  'uvicorn-args': commandField('Extra uvicorn arguments, e.g. "--workers 2".', ''),
  'worker-command': unitCommandField(
    'Background worker command, run in the release; its program is the virtualenv\'s (python, taskiq, ...) unless given as an absolute path, e.g. "taskiq worker tasks.broker:broker" (the standard\'s). `none`: no worker, the default (an app has one only when it says which); to turn off one the config file names, give none.',
    'none',
  ),
  'scheduler-command': unitCommandField(
    'Scheduler command (exactly one runs, on the first host or the host with the scheduler role), e.g. "taskiq scheduler tasks.scheduler:scheduler". `none`: no scheduler, the default (to turn off one the config file names, give none).',
    'none',
  ),
  'units-ready': choice({
    description:
      "How the worker and the scheduler show they have started. `stable` (the default): their process has run units-stable-seconds without exiting. `notify`: they say so themselves, with sd_notify READY=1 once they can take work (from Celery's worker_ready signal, or a few lines of Python once connected to the broker: see the README); their units are Type=notify, and a deploy or rollback waits for that signal, not for a time window (the verify action alone, long after a restart, still checks their process has run units-stable-seconds). Send it once what can fail at start is done: a crash after it is not seen. systemd stops and restarts a process that has not sent it within 90 s. A release records it: a rollback runs its worker as it was deployed, and provision writes the units as the serving release's record says.",
    default: 'stable',
    choices: ['stable', 'notify'] as const,
  }),
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
      "Hosts switched at a time in a rolling switch. A deploy or rollback first starts and checks the release in every host's standby slot, in parallel; then each batch moves traffic (no host leaves the load balancer's rotation: the move is a rename that drops no request). The first batch is verified whole before any other moves; from the second on, the next follows once this one's api answers its checks. Each host starts the release's worker and scheduler once its api answered; their checks go on while the next batches move, and the rollout succeeds once every host passed all of its checks. A failure on any host moves no further batch and returns every switched host to its previous release.",
    default: '1',
    min: 1,
    max: 1000,
    unit: 'hosts',
  }),
  'server-name': pattern({
    description:
      "nginx server_name of the app's site: of the minimal HTTP site the deploy creates when no site exists yet, and of provision's site when domains is empty (with domains, the site is theirs). _ (the default): nginx's default server, which only one site on a host can be.",
    default: '_',
    regex: /^(_|[A-Za-z0-9.*-]+( [A-Za-z0-9.*-]+)*)$/,
    expected: 'host names separated by spaces, or _',
  }),
} satisfies Record<string, Field>;

/** metalship's own entries in a release: its state and the virtualenv link. */
const RELEASE_INTERNALS = ['.metalship', '.venv'];

/**
 * Shared paths, normalised (no ./, doubled or trailing slashes): each inside the
 * release, none of metalship's own entries, none twice or inside another (a link
 * inside a linked directory would land in the shared tree).
 */
function parseSharedPaths(v: string): string[] | { error: string } {
  const paths: string[] = [];
  for (const item of splitList(v)) {
    const bad = checkRelativePath(item);
    if (bad) return { error: bad };
    const parts = item.split('/').filter((s) => s && s !== '.');
    const p = parts.join('/');
    if (!p) return { error: `${quote(item)} is the release itself` };
    if (RELEASE_INTERNALS.includes(parts[0]!))
      return { error: `${quote(item)} is metalship's ${parts[0]} in the release, not the app's` };
    if (parts[0] === '.env' && parts.length > 1) return { error: `${quote(item)} is inside .env, a file` };
    const other = paths.find((q) => q === p || p.startsWith(q + '/') || q.startsWith(p + '/'));
    if (other === p) return { error: `${quote(item)} is listed twice` };
    if (other) return { error: `${quote(item)} and '${other}' are inside one another` };
    paths.push(p);
  }
  return paths;
}

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
      if (trimmed === '') return { error: "'/' is the whole filesystem, not the app's directory" };
      const bad = checkRelativePath(trimmed.startsWith('/') ? trimmed.slice(1) : trimmed);
      return bad ? { error: bad } : trimmed;
    },
  ),
  exclude: custom<string[]>(
    {
      description:
        'Newline-separated glob patterns of files not to upload (.git, node_modules, __pycache__ and .venv never are).',
      default: '',
      multiline: true,
    },
    { expected: 'glob patterns, one per line, e.g. "tests/**"' },
    (v) => {
      const items = splitList(v, false);
      for (const p of items)
        if (!/^[A-Za-z0-9._/*?@+-]+$/.test(p)) return { error: `pattern ${quote(p)} has odd characters` };
      return items;
    },
  ),
  env: envField(
    "The release's own .env (KEY=value lines), typically a secret: written into the release, mode 600, the app user's, and kept as long as the release. " +
      'The new release starts in the standby slot with it, is verified, then takes traffic; a rollback to a release brings back the env it served with. ' +
      "Empty: the release gets a copy of the app's shared .env ({app-root}/.env, written by provision) as it is at release time.",
  ),
  'release-id': pattern({
    description: 'Release directory name. Default: the UTC time as YYYYMMDD_HHMMSS (made unique if taken).',
    default: '',
    notInConfig: PER_RUN,
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
        'Paths in the release linked to persistent ones in {app-root}/shared/<path>. Newline- or comma-separated. ' +
        "Not the release itself, nor metalship's .metalship or .venv in it. .env is accepted and needs no link: every release has its own (see env).",
      default: 'logs\nuploads',
      multiline: true,
    },
    { expected: 'distinct relative paths inside the release, e.g. "logs, uploads"' },
    parseSharedPaths,
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
    description:
      "Import the app module in the new release before it can be switched to. The deploy action imports it before a migration runs (none: no import); each host's start of the release in its standby slot is the check before traffic moves.",
    default: 'true',
  }),
} satisfies Record<string, Field>;

export const verifyInputs = {
  'verify-path': pattern({
    description:
      "Endpoint checked on each host: a deploy or rollback checks it on the new release's own api slot before traffic moves there (before current and the worker move), then through nginx after. Default: health-path. For example /health for a deep check.",
    default: '',
    regex: /^(|\/[A-Za-z0-9._~/?&=%-]*)$/,
    expected: 'a path beginning with /, or empty',
  }),
  url: url({
    description: 'Optional URL checked from the runner instead of the readiness endpoint on each host.',
    default: '',
  }),
  'expect-status': int({
    description: 'HTTP status a healthy answer has.',
    default: '200',
    min: 100,
    max: 599,
  }),
  'expect-body': text({
    description:
      'Text the healthy answer must contain. {release} stands for the release being verified (deploy and rollback), or in verify the release each host serves.',
    default: '',
    max: 1024,
    multiline: true,
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
  'units-stable-seconds': int({
    description:
      "Seconds the worker and the scheduler must run without exiting before they count as healthy (on top of verify-timeout to start), so a process that crashes as it starts (an import error, a refused connection) fails the check rather than passing it between restarts; after a deploy or rollback, systemd restarting one fails it at once. Each second of it adds about a second to a deploy or rollback of a host with a worker; raise it for a worker that takes longer to start or retries its broker for longer. 0: running is enough. Not used with units-ready: notify (the units' own signal is the check).",
    default: '2',
    min: 0,
    max: 600,
    unit: 'seconds',
  }),
} satisfies Record<string, Field>;

export const switchOnlyInputs = {
  'release-id': pattern({
    description: "The release to switch to (the release action's release-id output).",
    required: true,
    notInConfig: PER_RUN,
    regex: /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/,
    expected: 'a release directory name, e.g. 20250127_120000',
  }),
  'keep-releases': releaseInputs['keep-releases'],
} satisfies Record<string, Field>;

export const rollbackOnlyInputs = {
  'release-id': pattern({
    description: 'Release to roll back to. Default: the newest good release before the current one.',
    default: '',
    notInConfig: PER_RUN,
    regex: /^(|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$/,
    expected: 'a release directory name, e.g. 20250127_120000, or empty',
  }),
  'if-current': pattern({
    description:
      "Undo one deploy: roll back only when this release (the deploy's release-id) is current on the hosts, and do nothing, successfully, when it is not. Empty: always roll back.",
    default: '',
    notInConfig: PER_RUN,
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
/** Said of each command input whose empty default is alembic's own command line. */
const ALEMBIC_DEFAULT =
  "alembic's command line run by the release's python (alembic.config.main, so no alembic script is needed in the venv, as with system-site-packages)";
const revisionCommandField = commandField(
  `Command printing the schema revision (first word of its last line), run before and after migrating. Default (empty): \`alembic current\`, ${ALEMBIC_DEFAULT}.`,
  '',
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
    `Migration command, run in the release with its venv first on PATH and the app's .env, as the app user. Default (empty): \`alembic upgrade head\`, ${ALEMBIC_DEFAULT}.`,
    '',
  ),
  'revision-command': revisionCommandField,
  backup: bool({
    description: 'Take a pg_dump -Fc of the app database (DATABASE_URL in .env) before migrating.',
    default: 'true',
  }),
  'backup-keep': backupKeepField,
  'migrate-host': migrateHostField,
} satisfies Record<string, Field>;

/** How the deploy pipeline migrates (auto: when the release has alembic.ini or migrate-command is set). */
export const deployMigrateInputs = {
  migrate: choice({
    description:
      "Run database migrations between release and switch. auto: migrate when the release has an alembic.ini at its top (the source directory's root) or migrate-command is set, else not; true: always; false: never. " +
      "A migration whose files (alembic.ini, its script_location directory and the commands) are byte for byte those the current release applied, with that release's revision recorded, is skipped: no revision command, no backup.",
    default: 'auto',
    choices: ['auto', 'true', 'false'],
  }),
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
    `Downgrade command; {revision} stands for the target revision. Default (empty): \`alembic downgrade {revision}\`, ${ALEMBIC_DEFAULT}.`,
    '',
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

export interface ActionDef<I extends Record<string, Field> = Record<string, Field>> {
  name: string;
  title: string;
  description: string;
  inputs: I;
  outputs: Record<string, OutputDef>;
  /** Inputs that must agree with each other, on the typed settings (src/inputs/checks.ts). */
  check?(settings: SettingsOf<I>): string[];
}

/** An action's definition, its check typed by its own inputs. */
export function defineAction<I extends Record<string, Field>>(def: ActionDef<I>): ActionDef<I> {
  return def;
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
  'backup-host': oneHost(
    'The host that holds the backups (and the production database), or the backup host (roles=backup) with their copies: then restore-host must be another host, with PostgreSQL.',
    true,
  ),
  'backup-dir': directory({
    description: "Directory of the backups on backup-host (provision's backup directory), outside app-root.",
    default: '/var/backups/metalship/{app}',
    example: '/var/backups/metalship/{app}',
  }),
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
    reserved: POSTGRES_DATABASES,
    expected:
      "the app's database name: letters, digits, _ and - (at most 63), not postgres, template0 or template1",
  }),
  'scratch-database': pattern({
    description:
      'Name of the scratch database the backup is restored into, dropped afterwards. An existing database of that name that backup-verify did not create is refused.',
    default: 'metalship_verify',
    regex: SQL_NAME,
    reserved: POSTGRES_DATABASES,
    expected:
      'a database name of letters, digits, _ and - (at most 63), not postgres, template0 or template1',
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
      multiline: true,
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

/** The runner's own token, as action.yml's default names it: outside GitHub nothing evaluates it. */
export const GITHUB_TOKEN_DEFAULT = '${{ github.token }}';

/** GitHub Deployments (the Environments page) recorded by deploy and rollback. */
export const githubDeploymentInputs = {
  'github-deployments': bool({
    description:
      "Record a GitHub deployment of the release, with statuses in_progress, then success (the environment's previous deployment becomes inactive) or failure, so the Environments page shows what is live where. Needs `deployments: write` for the token; without it, or outside GitHub, it is skipped with a notice and the deploy goes on.",
    default: 'true',
  }),
  'environment-url': url({
    description: "The URL shown with the deployment (GitHub's environment_url). Default: url.",
    default: '',
  }),
  'github-token': custom<string>(
    {
      description:
        "Token that writes the deployments. Default: the workflow's token (`github.token`); grant it `deployments: write`.",
      default: GITHUB_TOKEN_DEFAULT,
      runnerDefault: true,
      secret: true,
      revealErrors: true,
    },
    { expected: 'a GitHub token (letters, digits and _.-), or empty' },
    (v) => {
      // Not evaluated (the command line): no token.
      if (v === GITHUB_TOKEN_DEFAULT) return '';
      if (!/^[A-Za-z0-9_.-]*$/.test(v)) return { error: 'has characters other than letters, digits and _.-' };
      return v;
    },
  ),
} satisfies Record<string, Field>;
