// Where everything lives on a host: the standard's /opt/{app} tree plus
// metalship's own state. One place, so scripts cannot disagree on a path.

import { createHash } from 'node:crypto';

export type Slot = 'blue' | 'green';

export interface Layout {
  app: string;
  root: string;
  releases: string;
  release(id: string): string;
  current: string;
  shared: string;
  venvs: string;
  /** The standard's /opt/{app}/venv: a link to the current release's environment. */
  venvLink: string;
  env: string;
  slots: string;
  state: string;
  /** Pre-migration dumps: outside the app's tree, root's alone. */
  preMigrateBackups: string;
  /** The user that builds virtualenvs: pip runs package code, which must run neither as root nor as the app. */
  buildUser: string;
  /** pip's cache, the build user's. */
  pipCache: string;
  lockFile: string;
  lockHolder: string;
  /** The deploy freeze (metalship lock): while it exists, deploys are refused. */
  freeze: string;
  history: string;
  activeSlot: string;
  apiSocket(slot: Slot): string;
  /** The socket nginx connects to: a link to the serving slot's socket, switched by rename. */
  apiLink: string;
  runDir: string;
  units: {
    api(slot: Slot): string;
    apiTemplate: string;
    /** The worker of one release: a new release's starts beside the old one's, which finishes its jobs meanwhile. worker('*'): every release's, as systemctl matches names. */
    worker(releaseId: string): string;
    workerTemplate: string;
    /** The one worker unit of metalship before worker instances: a switch replaces it. */
    legacyWorker: string;
    scheduler: string;
    target: string;
  };
  unitDir: string;
  nginxSite: string;
  nginxSiteEnabled: string;
  /** Exists from a change to the app's nginx files until nginx has loaded it (a run can stop in between). */
  nginxReloadPending: string;
  nginxUpstream: string;
  /** On a load balancer host: the app hosts as an nginx upstream. */
  balancerUpstream: string;
  /** The site's own access and error logs: root's directory, apart from Debian's nginx rotation rule. */
  nginxLogs: string;
  /** The journal namespace of the app's services (LogNamespace=) and its journald settings. */
  journalNamespace: string;
  journaldConf: string;
  /** logrotate rules: shared/logs (the app's own files) and the nginx logs (_ is in no app name: no two apps share a file). */
  logrotateApp: string;
  logrotateNginx: string;
}

/** Transient units that run builds: `metalship-build-<script token>-<n>`, stopped with the script's session. */
export const BUILD_UNIT_PREFIX = 'metalship-build-';
/**
 * Where pip is kept unpacked and byte-compiled, per wheel and interpreter, to
 * build venvs made without one (mstool pip-runner). Root's, shared by the
 * host's apps; a dot name no app name can take.
 */
export const PIP_RUNNER_ROOT = '/var/cache/metalship/.pip-runner';

/** `{app}-build`, shortened with a hash where that would pass the 32 characters of a user name. */
export function buildUserName(app: string): string {
  if (app.length <= 26) return `${app}-build`;
  return `${app.slice(0, 18)}-${createHash('sha256').update(app).digest('hex').slice(0, 7)}-build`;
}

export function layout(app: string, root: string): Layout {
  return {
    app,
    root,
    releases: `${root}/releases`,
    release: (id) => `${root}/releases/${id}`,
    current: `${root}/current`,
    shared: `${root}/shared`,
    venvs: `${root}/venvs`,
    venvLink: `${root}/venv`,
    env: `${root}/.env`,
    slots: `${root}/slots`,
    state: `${root}/.metalship`,
    preMigrateBackups: `/var/backups/metalship/${app}/pre-migrate`,
    buildUser: buildUserName(app),
    pipCache: `/var/cache/metalship/${app}/pip`,
    lockFile: `${root}/.metalship/deploy.lock`,
    lockHolder: `${root}/.metalship/lock-holder`,
    freeze: `${root}/.metalship/freeze`,
    history: `${root}/.metalship/history.log`,
    activeSlot: `${root}/.metalship/active-slot`,
    apiSocket: (s) => `/run/${app}-api-${s}/api.sock`,
    apiLink: `${root}/run/api.sock`,
    runDir: `${root}/run`,
    units: {
      api: (s) => `${app}-api@${s}.service`,
      apiTemplate: `${app}-api@.service`,
      worker: (id) => `${app}-worker@${id}.service`,
      workerTemplate: `${app}-worker@.service`,
      legacyWorker: `${app}-worker.service`,
      scheduler: `${app}-scheduler.service`,
      target: `${app}.target`,
    },
    unitDir: '/etc/systemd/system',
    nginxSite: `/etc/nginx/sites-available/${app}`,
    nginxSiteEnabled: `/etc/nginx/sites-enabled/${app}`,
    nginxReloadPending: `${root}/.metalship/nginx-reload-pending`,
    nginxUpstream: `/etc/nginx/conf.d/metalship-${app}-upstream.conf`,
    balancerUpstream: `/etc/nginx/conf.d/metalship-${app}-balancer.conf`,
    nginxLogs: `/var/log/nginx/${app}`,
    journalNamespace: app,
    journaldConf: `/etc/systemd/journald@${app}.conf`,
    logrotateApp: `/etc/logrotate.d/metalship-${app}`,
    logrotateNginx: `/etc/logrotate.d/metalship-${app}_nginx`,
  };
}
