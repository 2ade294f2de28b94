// Logs, 30 days as the standard says. The services' stdout and stderr go to
// the app's own journal namespace, kept 30 days; the files the app writes
// itself in shared/logs, and nginx's logs of the site, are rotated daily,
// compressed after a day, 30 kept.

import type { Layout } from '../layout.js';
import { bareWord, logrotateDir } from '../quoting.js';
import { sh } from '../sh.js';
import { file, itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

/** What every rule has: the standard's rotation. */
const ROTATION = `    daily
    rotate 30
    maxage 30
    compress
    delaycompress
    missingok
    notifempty
    dateext`;

export function logrotateConf(settings: ProvisionSettings): string {
  const logs = `${logrotateDir(settings.layout.shared, 'app-root')}/logs`;
  const user = bareWord(settings.user, 'logrotate');
  // su: the app user's directory is rotated as the app user, so a link it plants
  // there makes logrotate touch nothing the app user could not touch itself.
  // copytruncate: the app keeps its file open (opened for appending).
  return `# Managed by metalship: the app's logs.
${logs}/*.log ${logs}/*/*.log {
${ROTATION}
    copytruncate
    su ${user} ${user}
}
`;
}

/**
 * The site's nginx logs, in a directory of their own: Debian's nginx rule
 * (/var/log/nginx/*.log) keeps 14 days and does not reach into it, and two
 * rules naming one file would make logrotate report an error.
 */
export function nginxLogrotateConf(layout: Layout): string {
  return `# Managed by metalship: nginx's logs of the ${layout.app} site.
${logrotateDir(layout.nginxLogs, 'app')}/*.log {
${ROTATION}
    create 0640 www-data adm
    sharedscripts
    postrotate
        systemctl kill --kill-who=main --signal=USR1 nginx.service >/dev/null 2>&1 || true
    endscript
}
`;
}

/**
 * journald's settings for the app's namespace, read only by its own journald
 * (systemd-journald@{app}): the host's other services keep the host's settings.
 * Day-long files, so entries go when 30 days old, not a file's worth later.
 * Its disk use is bounded apart from the system journal's, by journald's
 * defaults (10% of the file system, at most 4 GiB; 15% kept free).
 */
export const JOURNALD_CONF = `# Managed by metalship: the journal of the app's services (LogNamespace=), kept 30 days.
[Journal]
Storage=persistent
MaxRetentionSec=30day
MaxFileSec=1day
`;

/** logrotate must accept the rules it was given (run after a change). */
function checked(path: string): string {
  return sh`[ "$CHECK" = 1 ] || logrotate -d ${path} >/dev/null 2>&1 || { echo ${`logrotate rejects ${path}`} >&2; exit 1; }`;
}

/** Lines that write the nginx rule (the nginx item's, wherever the site is). */
export function nginxLogLines(layout: Layout): string {
  return [
    sh`if [ ! -d ${layout.nginxLogs} ]; then ms_changed ${'nginx log directory ' + layout.nginxLogs}; ms_apply mkdir -p -m 755 ${layout.nginxLogs}; fi`,
    // As the rotation makes them (and Debian makes nginx's own): nginx would make them root's, readable by all.
    sh`for f in access.log error.log; do [ -e ${layout.nginxLogs}/"$f" ] || ms_apply install -m 640 -o www-data -g adm /dev/null ${layout.nginxLogs}/"$f"; done`,
    file(layout.logrotateNginx, nginxLogrotateConf(layout), {
      label: 'logrotate rules (nginx)',
      onChange: checked(layout.logrotateNginx),
    }),
  ].join('\n');
}

export function logsItem(settings: ProvisionSettings): Item {
  const layout = settings.layout;
  const journald = sh`systemd-journald@${layout.journalNamespace}.service`;
  return {
    name: 'logs',
    script: itemScript(
      settings.check,
      'ms_install logrotate',
      file(layout.logrotateApp, logrotateConf(settings), {
        label: 'logrotate rules',
        onChange: checked(layout.logrotateApp),
      }),
      file(layout.journaldConf, JOURNALD_CONF, {
        label: 'journald settings of the app',
        // A running namespace journald reads its settings when it starts; the services' streams survive its restart.
        onChange: `[ "$CHECK" = 1 ] || ! systemctl is-active --quiet ${journald} || systemctl restart ${journald}`,
      }),
    ),
  };
}
