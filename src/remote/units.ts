// The systemd units of an app, as text: the api (a template with a blue and a
// green instance, for zero-downtime switches), the worker, the single scheduler
// and a target grouping them. Shared by the deploy path and provision.

import type { Layout } from './layout.js';
import { quote, sh } from './sh.js';
import { execLine, specifier, splitVariable, unitEnv, unitText, unitWord, type Part } from './quoting.js';

export interface UnitSettings {
  layout: Layout;
  user: string;
  appModule: string;
  uvicornArgs: string[];
  workerCommand: string[];
  schedulerCommand: string[];
  /** How the worker and the scheduler show they have started (the units-ready input): notify makes them Type=notify. */
  unitsReady: 'stable' | 'notify';
}

/** How long a stopping service may take to finish its work (the standard's 30 s, plus a margin) before systemd kills it. */
export const STOP_TIMEOUT_SECONDS = 35;

/**
 * `systemd_refused UNIT`: prints why, and succeeds, when systemd itself could
 * not start the unit's process, not the app: 219/CGROUP (it could not place
 * the process) or result 'resources' (it could not spawn it: "Failed to spawn
 * executor"). Both are seen in these containers right after a unit's earlier
 * cgroup went, on systemd 252 and 257; a start a moment later succeeds.
 */
export const SYSTEMD_REFUSED = [
  'systemd_refused() {',
  '  local k v status="" result=""',
  '  while IFS="=" read -r k v; do case $k in ExecMainStatus) status=$v ;; Result) result=$v ;; esac; done < <(systemctl show -p ExecMainStatus -p Result "$1" 2>/dev/null || true)',
  '  if [ "$status" = 219 ]; then echo 219/CGROUP; elif [ "$result" = resources ]; then echo "result: resources"; else return 1; fi',
  '}',
].join('\n');

/**
 * A worker instance's name as shell text, its release id given as shell text
 * (an expansion, or * for every release's), the name under dir when given.
 */
export function workerUnitShell(layout: Layout, idShell: string, dir = ''): string {
  const [prefix, suffix] = layout.units.worker('\0').split('\0') as [string, string];
  return quote(dir + prefix) + idShell + quote(suffix);
}

/** systemd's sandboxing: the app reads its release and writes only shared/ (field notes, systemd hardening). */
export function hardening(layout: Layout): string {
  return [
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    `ReadWritePaths=${unitWord(layout.shared)}`,
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    'ProtectHome=yes',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectKernelLogs=yes',
    'ProtectControlGroups=yes',
    'ProtectClock=yes',
    'ProtectHostname=yes',
    'ProtectProc=invisible',
    'RestrictNamespaces=yes',
    'LockPersonality=yes',
    'RestrictRealtime=yes',
    'RestrictSUIDSGID=yes',
    'RemoveIPC=yes',
    'SystemCallArchitectures=native',
    'SystemCallFilter=@system-service',
    'SystemCallFilter=~@privileged @resources',
    'SystemCallErrorNumber=EPERM',
    'CapabilityBoundingSet=',
    'AmbientCapabilities=',
    'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6',
    'DevicePolicy=closed',
    'UMask=0027',
  ].join('\n');
}

/**
 * journalctl's option for the app's units: their own output is in the app's
 * namespace, systemd's lines about them (started, exited, failed) in the
 * system journal; + reads both, interleaved.
 */
export function journalOf(layout: Layout): string {
  return `--namespace=+${layout.journalNamespace}`;
}

/** A command's program resolved inside a release's venv unless it is absolute. */
function inVenv(release: Part[], words: string[]): (string | Part[])[] {
  const [program, ...args] = words;
  if (!program) return [];
  return [program.startsWith('/') ? program : [...release, `/.venv/bin/${program}`], ...args];
}

/**
 * An app service unit: what every one has (the user, the release as working
 * directory, the .env, restart and stop rules, the sandboxing), around what is
 * its own. workdir may hold the %i of the api template.
 */
function serviceUnit(
  settings: UnitSettings,
  own: {
    description: string;
    after: string;
    note?: string;
    workdir: Part[];
    service: string[];
    /** The process says when it is ready (sd_notify READY=1); else it is started once it runs. */
    notify?: boolean;
  },
): string {
  const layout = settings.layout;
  const workdir = own.workdir;
  return `# Managed by metalship: changes are overwritten on the next deploy.
${own.note ? `# ${own.note}\n` : ''}[Unit]
Description=${own.description}
After=${own.after}
PartOf=${unitWord(layout.units.target)}
# Every deploy and rollback restarts the service: quick ones in a row must not
# hit systemd's start limit (5 in 10 s). A crash loop is paced by RestartSec.
StartLimitIntervalSec=0

[Service]
${
  own.notify
    ? // all: a worker started through a wrapper, or whose pool sends it, is heard as well.
      'Type=notify\nNotifyAccess=all'
    : 'Type=simple'
}
${[
  `User=${unitText(settings.user)}`,
  `Group=${unitText(settings.user)}`,
  `WorkingDirectory=${unitText(...workdir)}`,
  // The release's own .env (the deploy's env, or a copy of the shared one): a rollback brings back the env that served.
  `EnvironmentFile=-${unitText(...workdir, '/.env')}`,
  `Environment=${unitEnv('PATH', ...workdir, '/.venv/bin:/usr/local/bin:/usr/bin:/bin')}`,
  'Environment=PYTHONUNBUFFERED=1',
  `Environment=${unitEnv('APP_NAME', layout.app)}`,
  'Restart=always',
  'RestartSec=5',
  // stdout and stderr go to the app's own journal (journald@{app}.conf keeps it
  // 30 days): no host-wide journald setting, and no file root would open in shared/.
  `LogNamespace=${unitWord(layout.journalNamespace)}`,
  ...own.service,
  `TimeoutStopSec=${STOP_TIMEOUT_SECONDS}`,
  'KillMode=mixed',
  'KillSignal=SIGTERM',
].join('\n')}
${hardening(layout)}

[Install]
WantedBy=${unitWord(layout.units.target)}
`;
}

export function apiUnit(settings: UnitSettings): string {
  const layout = settings.layout;
  const slot = specifier('i');
  const workdir = [layout.slots, '/', slot];
  const uvicorn = execLine([
    [...workdir, '/.venv/bin/python'],
    '-m',
    'uvicorn',
    settings.appModule,
    '--uds',
    [`/run/${layout.app}-api-`, slot, '/api.sock'],
    // Above nginx's idle upstream time, so uvicorn never closes a connection nginx is about to reuse.
    '--timeout-keep-alive',
    '75',
    // The flags the release's uvicorn has (switch.ts UVICORN_FLAGS), from the release's uvicorn.env.
    splitVariable('METALSHIP_UVICORN_FLAGS'),
    ...settings.uvicornArgs,
  ]);
  return serviceUnit(settings, {
    description: unitText(layout.app, ' API (', slot, ' slot)'),
    after: 'network.target postgresql.service redis-server.service',
    workdir,
    service: [
      `EnvironmentFile=-${unitText(...workdir, '/.metalship/uvicorn.env')}`,
      `ExecStart=${uvicorn}`,
      `RuntimeDirectory=${unitWord(`${layout.app}-api-`, slot)}`,
      'RuntimeDirectoryMode=0755',
    ],
  });
}

/** A unit running a command from a release: the worker and the scheduler. */
function releaseUnit(
  settings: UnitSettings,
  options: { what: Part[]; command: string[]; after: string; note?: string; release: Part[] },
): string | null {
  if (options.command.length === 0) return null;
  const layout = settings.layout;
  return serviceUnit(settings, {
    description: unitText(layout.app, ' ', ...options.what),
    after: options.after,
    note: options.note,
    workdir: options.release,
    service: [`ExecStart=${execLine(inVenv(options.release, options.command))}`],
    notify: settings.unitsReady === 'notify',
  });
}

/**
 * The worker, a template with an instance per release (its id): the switch
 * starts the new release's worker beside the old one's and stops the old one
 * without waiting, so a job in progress delays neither the new worker nor the
 * deploy, and jobs keep being taken meanwhile.
 */
export function workerUnit(settings: UnitSettings): string | null {
  return releaseUnit(settings, {
    what: ['worker (release ', specifier('i'), ')'],
    command: settings.workerCommand,
    after: 'network.target postgresql.service redis-server.service',
    note: 'One instance per release (its id): the release current points at runs; an old one finishes its jobs, then stops.',
    release: [settings.layout.releases, '/', specifier('i')],
  });
}

export function schedulerUnit(settings: UnitSettings): string | null {
  return releaseUnit(settings, {
    what: ['scheduler'],
    command: settings.schedulerCommand,
    after: 'network.target redis-server.service',
    note: 'Exactly one scheduler runs fleet-wide: it is installed on one host only.',
    release: [settings.layout.current],
  });
}

export function targetUnit(layout: Layout): string {
  return `# Managed by metalship.
[Unit]
Description=${unitText(layout.app, ' (all services)')}

[Install]
WantedBy=multi-user.target
`;
}

/** The unit files for a host: name -> content (null: the unit must not exist there). */
export function unitFiles(
  settings: UnitSettings,
  roles: { worker: boolean; scheduler: boolean },
): Record<string, string | null> {
  const layout = settings.layout;
  return {
    [layout.units.target]: targetUnit(layout),
    [layout.units.apiTemplate]: apiUnit(settings),
    [layout.units.workerTemplate]: roles.worker ? workerUnit(settings) : null,
    [layout.units.scheduler]: roles.scheduler ? schedulerUnit(settings) : null,
  };
}

/**
 * Script lines that refuse to write (or remove) a unit of these names that is
 * not ours: one the distribution ships (an app named multi-user would replace
 * multi-user.target), or one in /etc without our mark.
 */
export function unitsOurs(names: string[]): string {
  return [
    `for unit in ${names.map((n) => sh`${n}`).join(' ')}; do`,
    '  for dir in /lib/systemd/system /usr/lib/systemd/system; do',
    '    if [ -e "$dir/$unit" ]; then echo "$dir/$unit exists: the system has a unit of that name, which this app\'s unit would replace (choose another app name)" >&2; exit 1; fi',
    '  done',
    '  if [ -e "/etc/systemd/system/$unit" ] && ! grep -q "^# Managed by metalship" "/etc/systemd/system/$unit"; then echo "/etc/systemd/system/$unit exists and is not metalship\'s (choose another app name, or remove it)" >&2; exit 1; fi',
    'done',
  ].join('\n');
}
