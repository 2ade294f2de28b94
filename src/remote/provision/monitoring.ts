// Monitoring: an optional health-check ping (a timer calls the URL every minute
// while the app answers its health path) and an optional node_exporter.

import { defaultsValue, execLine, unitText } from '../quoting.js';
import { sh } from '../sh.js';
import { file, itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

/**
 * curl's options for both requests: no ~/.curlrc, no {}/[] URL globbing, the
 * path sent as written (no ../ squashing), any answer but 2xx a failure.
 */
export const CURL = [
  '/usr/bin/curl',
  '--disable',
  '--fail',
  '--silent',
  '--show-error',
  '--globoff',
  '--path-as-is',
  '--max-time',
  '10',
  '--output',
  '/dev/null',
];

export function pingUnits(settings: ProvisionSettings): { service: string; timer: string } {
  const layout = settings.layout;
  // No shell: each URL is one argument of its own (& ? ; quotes are only text),
  // and a oneshot's ExecStart= lines run in order, each only if the one before succeeded.
  return {
    service: `# Managed by metalship: tells the monitoring service that ${layout.app} is healthy.
[Unit]
Description=${unitText(layout.app, ' health ping')}
After=network-online.target

[Service]
Type=oneshot
User=${unitText(settings.user)}
ExecStart=${execLine([...CURL, '--unix-socket', layout.apiLink, '--url', `http://localhost${settings.monitoring.pingPath}`])}
ExecStart=${execLine([...CURL, '--retry', '3', '--url', settings.monitoring.pingUrl])}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
`,
    timer: `# Managed by metalship.
[Unit]
Description=${unitText(layout.app, ' health ping every minute')}

[Timer]
OnCalendar=minutely
AccuracySec=5s

[Install]
WantedBy=timers.target
`,
  };
}

/** /etc/default/prometheus-node-exporter: its unit runs the exporter with $ARGS. */
export function nodeExporterDefaults(listen: string): string {
  return `# Managed by metalship.\nARGS=${defaultsValue(`--web.listen-address=${listen}`)}\n`;
}

export function monitoringItem(settings: ProvisionSettings): Item {
  const monitoring2 = settings.monitoring;
  const app = settings.layout.app;
  const ping = pingUnits(settings);
  return {
    name: 'monitoring',
    script: itemScript(
      settings.check,
      monitoring2.pingUrl ? 'reload=0' : null,
      monitoring2.pingUrl
        ? [
            'ms_install curl',
            file(`/etc/systemd/system/metalship-${app}-ping.service`, ping.service, {
              label: 'health ping service',
              onChange: 'reload=1',
            }),
            file(`/etc/systemd/system/metalship-${app}-ping.timer`, ping.timer, {
              label: 'health ping timer',
              onChange: 'reload=1',
            }),
            'if [ "$reload" = 1 ] && [ "$CHECK" != 1 ]; then systemctl daemon-reload; fi',
            sh`if ! systemctl is-enabled --quiet ${`metalship-${app}-ping.timer`} 2>/dev/null; then ms_changed "health ping timer enabled"; ms_apply systemctl enable --now --quiet ${`metalship-${app}-ping.timer`}; fi`,
          ].join('\n')
        : sh`if [ -f ${`/etc/systemd/system/metalship-${app}-ping.timer`} ]; then ms_changed "health ping removed"; if [ "$CHECK" != 1 ]; then systemctl disable --now ${`metalship-${app}-ping.timer`} 2>/dev/null || true; rm -f ${`/etc/systemd/system/metalship-${app}-ping.timer`} ${`/etc/systemd/system/metalship-${app}-ping.service`}; systemctl daemon-reload; fi; fi`,
      monitoring2.nodeExporter
        ? [
            'ms_install prometheus-node-exporter',
            file(
              '/etc/default/prometheus-node-exporter',
              nodeExporterDefaults(monitoring2.nodeExporterListen),
              {
                label: 'node_exporter listen address',
                onChange: '[ "$CHECK" = 1 ] || systemctl restart prometheus-node-exporter',
              },
            ),
            'if ! systemctl is-active --quiet prometheus-node-exporter; then ms_changed "node_exporter started"; ms_apply systemctl enable --now --quiet prometheus-node-exporter; fi',
          ].join('\n')
        : null,
      monitoring2.pingUrl || monitoring2.nodeExporter
        ? null
        : 'echo "note no health ping URL, no node_exporter"',
    ),
  };
}
