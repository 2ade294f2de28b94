// Alerts: the alert program of an app (src/remote/py/alert.py with its settings),
// the curl config files that hold the secret URLs, the OnFailure= handler
// template, the periodic check's service and timer, and the drop-in that gives
// a unit an OnFailure= handler. Pure functions from settings to file contents.

import { readFileSync } from 'node:fs';
import { ETC_DIR } from './provision/common.js';
import { execLine, specifier, unitText, unitWord } from './quoting.js';

const ALERT_PY = readFileSync(new URL('./py/alert.py', import.meta.url), 'utf8');
const SETTINGS_LINE = 'SETTINGS = json.loads("{}")';

export interface AlertOptions {
  app: string;
  /** Paths whose filesystems are checked (each filesystem once). */
  diskPaths: string[];
  diskPercent: number;
  /** The certificates served here: the site's, the redis host's. */
  certificates: string[];
  certificateDays: number;
  /** The record of the last restore test (null: no backups on this host). */
  restoreRecord: string | null;
  restoreDays: number;
  backupUnit: string;
  heartbeat: boolean;
}

export function alertPaths(app: string) {
  return {
    program: `/usr/local/sbin/metalship-alert-${app}`,
    webhook: `${ETC_DIR}/alert-${app}.curl`,
    heartbeat: `${ETC_DIR}/alert-${app}-heartbeat.curl`,
    handler: `metalship-alert-${app}@.service`,
    check: `metalship-alert-check-${app}.service`,
    timer: `metalship-alert-check-${app}.timer`,
    dropIn: 'metalship-alert.conf',
  };
}

/** The program: alert.py with its settings as one JSON string literal (valid Python too). */
export function alertProgram(o: AlertOptions): string {
  if (!ALERT_PY.includes(SETTINGS_LINE)) throw new Error('alert.py has no settings line');
  const p = alertPaths(o.app);
  const settings = {
    app: o.app,
    webhook: p.webhook,
    heartbeat: o.heartbeat ? p.heartbeat : '',
    disk_paths: o.diskPaths,
    disk_percent: o.diskPercent,
    certificates: o.certificates,
    certificate_days: o.certificateDays,
    restore_record: o.restoreRecord ?? '',
    restore_days: o.restoreDays,
    backup_unit: o.backupUnit,
  };
  // JSON's string escapes are Python's: the literal is the JSON text, byte for byte.
  const line = `SETTINGS = json.loads(${JSON.stringify(JSON.stringify(settings))})`;
  return `#!/usr/bin/python3 -I\n# Managed by metalship: changes are overwritten.\n${ALERT_PY.replace(SETTINGS_LINE, () => line)}`;
}

/** A curl config file (`curl --config`) that names the URL: it never appears on a command line. */
export function curlConfig(url: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\0-\x1f\x7f]/.test(url)) throw new Error('a URL with a control character cannot be written');
  return `# Managed by metalship (a secret: root only).\nurl = "${url.replace(/[\\"]/g, (c) => `\\${c}`)}"\n`;
}

/** Run as root (the URLs are root's); writes only its state directory (when each alert was last sent). */
function hardening(app: string): string[] {
  return [
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'PrivateTmp=yes',
    `StateDirectory=${unitWord(`metalship-alert-${app}`)}`,
    'StateDirectoryMode=0700',
  ];
}

/** The OnFailure= handler (one instance per failed unit), the check's service and its timer. */
export function alertUnits(app: string): { handler: string; check: string; timer: string } {
  const p = alertPaths(app);
  return {
    // No OnFailure= of its own: a failing alert must not alert on itself.
    handler: [
      `# Managed by metalship: tells the alert webhook that a unit of ${app} failed.`,
      '[Unit]',
      `Description=${unitText(`metalship alert (${app}):`)} %i failed`,
      '',
      '[Service]',
      'Type=oneshot',
      `ExecStart=${execLine([p.program, 'unit', specifier('i')])}`,
      ...hardening(app),
      '',
    ].join('\n'),
    check: [
      `# Managed by metalship: disk use, certificate expiry and the last restore test of ${app}.`,
      '[Unit]',
      `Description=${unitText(`metalship alert checks (${app})`)}`,
      onFailureLine(app),
      '',
      '[Service]',
      'Type=oneshot',
      `ExecStart=${execLine([p.program, 'check'])}`,
      ...hardening(app),
      '',
    ].join('\n'),
    timer: [
      '# Managed by metalship.',
      '[Unit]',
      `Description=${unitText(`metalship alert checks (${app}) every hour`)}`,
      '',
      '[Timer]',
      'OnCalendar=hourly',
      'RandomizedDelaySec=5min',
      '',
      '[Install]',
      'WantedBy=timers.target',
      '',
    ].join('\n'),
  };
}

function onFailureLine(app: string): string {
  return `OnFailure=${unitWord(`metalship-alert-${app}@`, specifier('n'), '.service')}`;
}

/** A drop-in giving a unit the app's OnFailure= handler (added to any the unit has). */
export function onFailureDropIn(app: string): string {
  return `# Managed by metalship: a failure of this unit is sent to the alert webhook.\n[Unit]\n${onFailureLine(app)}\n`;
}
