// The systemd units of an app, as text: the api (a template with a blue and a
// green instance, for zero-downtime switches), the worker, the single scheduler
// and a target grouping them. Shared by the deploy path and provision.

import type { Layout } from './layout.js';
import { execLine, specifier, splitVariable, unitEnv, unitText, unitWord, type Part } from './quoting.js';

export interface UnitSettings {
  layout: Layout;
  user: string;
  appModule: string;
  uvicornArgs: string[];
  workerCommand: string[];
  schedulerCommand: string[];
}

/** systemd's sandboxing: the app reads its release and writes only shared/ (field notes, systemd hardening). */
export function hardening(l: Layout): string {
  return [
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    `ReadWritePaths=${unitWord(l.shared)}`,
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

/** A command's program resolved inside a venv unless it is absolute. */
function inVenv(venvBin: string, words: string[]): string[] {
  const [program, ...args] = words;
  if (!program) return [];
  return [program.startsWith('/') ? program : `${venvBin}/${program}`, ...args];
}

/** Settings every app service has; workdir may hold the %i of the api template. */
function serviceCommon(s: UnitSettings, workdir: Part[]): string {
  const l = s.layout;
  return [
    `User=${unitText(s.user)}`,
    `Group=${unitText(s.user)}`,
    `WorkingDirectory=${unitText(...workdir)}`,
    `EnvironmentFile=-${unitText(l.env)}`,
    `Environment=${unitEnv('PATH', ...workdir, '/.venv/bin:/usr/local/bin:/usr/bin:/bin')}`,
    'Environment=PYTHONUNBUFFERED=1',
    `Environment=${unitEnv('APP_NAME', l.app)}`,
    'Restart=always',
    'RestartSec=5',
  ].join('\n');
}

export function apiUnit(s: UnitSettings): string {
  const l = s.layout;
  const slot = specifier('i');
  const workdir = [l.slots, '/', slot];
  const uvicorn = execLine([
    [...workdir, '/.venv/bin/python'],
    '-m',
    'uvicorn',
    s.appModule,
    '--uds',
    [`/run/${l.app}-api-`, slot, '/api.sock'],
    // Above nginx's idle upstream time, so uvicorn never closes a connection nginx is about to reuse.
    '--timeout-keep-alive',
    '75',
    // The flags the release's uvicorn has (switch.ts UVICORN_FLAGS), from the release's uvicorn.env.
    splitVariable('METALSHIP_UVICORN_FLAGS'),
    ...s.uvicornArgs,
  ]);
  return `# Managed by metalship: changes are overwritten on the next deploy.
[Unit]
Description=${unitText(l.app, ' API (', slot, ' slot)')}
After=network.target postgresql.service redis-server.service
PartOf=${unitWord(l.units.target)}

[Service]
Type=simple
${serviceCommon(s, workdir)}
EnvironmentFile=-${unitText(...workdir, '/.metalship/uvicorn.env')}
ExecStart=${uvicorn}
RuntimeDirectory=${unitWord(`${l.app}-api-`, slot)}
RuntimeDirectoryMode=0755
TimeoutStopSec=35
KillMode=mixed
KillSignal=SIGTERM
${hardening(l)}

[Install]
WantedBy=${unitWord(l.units.target)}
`;
}

/** A unit running a command from the current release: the worker and the scheduler. */
function currentReleaseUnit(
  s: UnitSettings,
  o: { what: string; command: string[]; after: string; note?: string },
): string | null {
  if (o.command.length === 0) return null;
  const l = s.layout;
  return `# Managed by metalship: changes are overwritten on the next deploy.
${o.note ? `# ${o.note}\n` : ''}[Unit]
Description=${unitText(l.app, ' ', o.what)}
After=${o.after}
PartOf=${unitWord(l.units.target)}

[Service]
Type=simple
${serviceCommon(s, [l.current])}
ExecStart=${execLine(inVenv(`${l.current}/.venv/bin`, o.command))}
TimeoutStopSec=35
KillMode=mixed
KillSignal=SIGTERM
${hardening(l)}

[Install]
WantedBy=${unitWord(l.units.target)}
`;
}

export function workerUnit(s: UnitSettings): string | null {
  return currentReleaseUnit(s, {
    what: 'worker',
    command: s.workerCommand,
    after: 'network.target postgresql.service redis-server.service',
  });
}

export function schedulerUnit(s: UnitSettings): string | null {
  return currentReleaseUnit(s, {
    what: 'scheduler',
    command: s.schedulerCommand,
    after: 'network.target redis-server.service',
    note: 'Exactly one scheduler runs fleet-wide: it is installed on one host only.',
  });
}

export function targetUnit(l: Layout): string {
  return `# Managed by metalship.
[Unit]
Description=${unitText(l.app, ' (all services)')}

[Install]
WantedBy=multi-user.target
`;
}

/** The unit files for a host: name -> content (null: the unit must not exist there). */
export function unitFiles(
  s: UnitSettings,
  roles: { worker: boolean; scheduler: boolean },
): Record<string, string | null> {
  const l = s.layout;
  return {
    [l.units.target]: targetUnit(l),
    [l.units.apiTemplate]: apiUnit(s),
    [l.units.worker]: roles.worker ? workerUnit(s) : null,
    [l.units.scheduler]: roles.scheduler ? schedulerUnit(s) : null,
  };
}
