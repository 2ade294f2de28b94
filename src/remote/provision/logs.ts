// Logs: shared/logs rotated daily, compressed after a day, 30 days kept.

import { bareWord, logrotateDir } from '../quoting.js';
import { file, itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

export function logrotateConf(settings: ProvisionSettings): string {
  const logs = `${logrotateDir(settings.layout.shared, 'app-root')}/logs`;
  const user = bareWord(settings.user, 'logrotate');
  return `# Managed by metalship: the app's logs.
${logs}/*.log ${logs}/*/*.log {
    daily
    rotate 30
    maxage 30
    compress
    delaycompress
    missingok
    notifempty
    copytruncate
    dateext
    su ${user} ${user}
}
`;
}

export function logsItem(settings: ProvisionSettings): Item {
  const path = `/etc/logrotate.d/metalship-${settings.layout.app}`;
  return {
    name: 'logs',
    script: itemScript(
      settings.check,
      'ms_install logrotate',
      file(path, logrotateConf(settings), {
        label: 'logrotate rules',
        onChange: `[ "$CHECK" = 1 ] || logrotate -d ${path} >/dev/null 2>&1 || { echo "logrotate rejects ${path}" >&2; exit 1; }`,
      }),
    ),
  };
}
