// Alerts: with alert-webhook, the alert program (root only), its secret URLs in
// root-only curl config files, an OnFailure= handler on the app's units and
// metalship's own (the backup, the health ping, the checks), and an hourly
// timer for the checks (disk, certificate, restore test); where PostgreSQL or
// Redis runs, an OnFailure= handler on them too, and on nginx where a site is.
// Without it, all of that is removed. Every host has them: an app host; the
// db/redis host (the backup's failure, the disk, the restore test); a load
// balancer (nginx, the disk, the certificate when TLS ends there).

import { lastVerifiedPath, backupUnitNames } from '../backup.js';
import { alertPaths, alertProgram, alertUnits, curlConfig, onFailureDropIn } from '../alert.js';
import { sh } from '../sh.js';
import { ensureEtcDir, file, itemScript, type Item } from './common.js';
import { certPaths } from './nginx.js';
import { POSTGRESQL_TLS_FILES } from './postgresql.js';
import { REDIS_TLS_FILES } from './redis.js';
import { hasSite, postgresqlHere, redisHere, type ProvisionSettings } from './settings.js';

const UNIT_DIR = '/etc/systemd/system';

/** The units a failure of which is an alert: the app's and metalship's (a drop-in for a unit not here is inert). */
export function alertedUnits(settings: ProvisionSettings): string[] {
  const layout = settings.layout;
  // A load balancer runs none of them.
  if (settings.balancer) return [];
  return [
    layout.units.apiTemplate,
    // The template's drop-in is every release's worker's.
    layout.units.workerTemplate,
    layout.units.legacyWorker,
    layout.units.scheduler,
    backupUnitNames(layout.app).service,
    `metalship-${layout.app}-ping.service`,
  ];
}

/**
 * The database and Redis servers and nginx, alerted on where they run. PostgreSQL's by
 * its clusters' template (postgresql@13-main on Debian 11, @15-main on 12,
 * @17-main on 13; postgresql.service only starts them). Their drop-ins are
 * named after the app: apps sharing a host's PostgreSQL each add their own.
 */
function serverUnits(settings: ProvisionSettings): { unit: string; dropIn: string; here: boolean }[] {
  const dropIn = `metalship-alert-${settings.layout.app}.conf`;
  return [
    { unit: 'postgresql@.service', dropIn, here: postgresqlHere(settings) },
    { unit: 'redis-server.service', dropIn, here: redisHere(settings) },
    { unit: 'nginx.service', dropIn, here: hasSite(settings) && settings.nginx.enabled },
  ];
}

/** Every drop-in of the item: those of the units alerted on here and those to remove. */
function dropIns(settings: ProvisionSettings): { unit: string; path: string; here: boolean }[] {
  const dropIn = alertPaths(settings.layout.app).dropIn;
  return alertedUnits(settings)
    .map((unit) => ({ unit, dropIn, here: true }))
    .concat(serverUnits(settings))
    .map((d) => ({ unit: d.unit, path: `${UNIT_DIR}/${d.unit}.d/${d.dropIn}`, here: d.here }));
}

export function alertsItem(settings: ProvisionSettings): Item {
  const app = settings.layout.app;
  const alerts = settings.alerts;
  const p = alertPaths(app);
  const all = dropIns(settings);
  const units = alertUnits(app);
  const owned = [p.program, p.webhook, p.heartbeat, ...all.map((d) => d.path)].concat(
    [p.handler, p.check, p.timer].map((u) => `${UNIT_DIR}/${u}`),
  );
  if (!alerts.webhook)
    return {
      name: 'alerts',
      script: itemScript(
        settings.check,
        sh`if [ -e ${p.program} ]; then ms_changed "alerts removed"; if [ "$CHECK" != 1 ]; then systemctl disable --now ${p.timer} 2>/dev/null || true; rm -f ${owned}; rm -rf ${`/var/lib/metalship-alert-${app}`}; systemctl daemon-reload; fi; fi`,
        'echo "note no alert-webhook: no alerts"',
      ),
    };
  const pg = settings.postgresql;
  // The backups are where PostgreSQL is: here, unless a db host has it.
  const backupsHere = settings.offsite.pusher;
  const program = alertProgram({
    app,
    diskPaths: [
      ...new Set([
        '/',
        settings.layout.root,
        ...(backupsHere || settings.serves.backup ? [pg.backupDir] : []),
      ]),
    ],
    diskPercent: alerts.diskPercent,
    certificates: [
      ...(hasSite(settings) && certPaths(settings) ? [certPaths(settings)!.certificate] : []),
      // The server certificates (their CAs live 20 years; provision warns of one expiring).
      ...(settings.serves.redis && settings.redis.enabled ? [REDIS_TLS_FILES.cert] : []),
      ...(settings.serves.db && settings.topology.db && pg.enabled ? [POSTGRESQL_TLS_FILES.cert] : []),
    ],
    certificateDays: alerts.certificateDays,
    restoreRecord: backupsHere ? lastVerifiedPath(pg.backupDir) : null,
    restoreDays: alerts.restoreDays,
    backupUnit: backupUnitNames(app).service,
    heartbeat: !!alerts.heartbeat,
  });
  const reload = { onChange: 'reload=1' };
  return {
    name: 'alerts',
    script: itemScript(
      settings.check,
      'reload=0',
      'ms_install curl python3 openssl',
      ensureEtcDir(),
      file(p.program, program, { mode: '700', label: 'alert program' }),
      file(p.webhook, curlConfig(alerts.webhook), { mode: '600', label: 'alert webhook' }),
      alerts.heartbeat
        ? file(p.heartbeat, curlConfig(alerts.heartbeat), { mode: '600', label: 'alert heartbeat' })
        : sh`if [ -e ${p.heartbeat} ]; then ms_changed "alert heartbeat removed"; ms_apply rm -f ${p.heartbeat}; fi`,
      file(`${UNIT_DIR}/${p.handler}`, units.handler, { label: 'alert unit', ...reload }),
      file(`${UNIT_DIR}/${p.check}`, units.check, { label: 'alert check service', ...reload }),
      file(`${UNIT_DIR}/${p.timer}`, units.timer, { label: 'alert check timer', ...reload }),
      ...all.map(({ unit, path, here }) => {
        const dir = `${UNIT_DIR}/${unit}.d`;
        return here
          ? [
              sh`if [ ! -d ${dir} ]; then ms_apply mkdir -p ${dir}; fi`,
              file(path, onFailureDropIn(app), { label: `alert on failure of ${unit}`, ...reload }),
            ].join('\n')
          : // Not served here (any more): no alert of this app on it.
            sh`if [ -e ${path} ]; then ms_changed ${`alert on failure of ${unit} removed`}; ms_apply rm -f ${path}; reload=1; fi`;
      }),
      'if [ "$reload" = 1 ] && [ "$CHECK" != 1 ]; then systemctl daemon-reload; fi',
      sh`if ! systemctl is-enabled --quiet ${p.timer} 2>/dev/null; then ms_changed "alert check timer enabled"; ms_apply systemctl enable --now --quiet ${p.timer}; fi`,
    ),
  };
}
