// Logs: shared/logs rotated daily, compressed after a day, 30 days kept.

import { bareWord, logrotateDir } from '../quoting.js';
import { file, itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

export function logrotateConf(s: ProvisionSettings): string {
  const logs = `${logrotateDir(s.layout.shared, 'app-root')}/logs`;
  const user = bareWord(s.user, 'logrotate');
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

export function logsItem(s: ProvisionSettings): Item {
  const path = `/etc/logrotate.d/metalship-${s.layout.app}`;
  return {
    name: 'logs',
    script: itemScript(
      s.check,
      'ms_install logrotate',
      file(path, logrotateConf(s), {
        label: 'logrotate rules',
        onChange: `[ "$CHECK" = 1 ] || logrotate -d ${path} >/dev/null 2>&1 || { echo "logrotate rejects ${path}" >&2; exit 1; }`,
      }),
    ),
  };
}
