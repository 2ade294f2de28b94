// Every action's inputs and outputs, defined once. action.yml files are
// generated from this (npm run gen) and a test checks they match.

import { serviceUrlCheck } from './service-urls.js';
import {
  backupVerifyInputs,
  commonOutputs,
  connectionInputs,
  deployMigrateInputs,
  deployOnlyInputs,
  githubDeploymentInputs,
  migrateInputs,
  releaseInputs,
  rollbackMigrateInputs,
  rollbackOnlyInputs,
  serviceInputs,
  switchOnlyInputs,
  verifyInputs,
  defineAction,
  type ActionDef,
} from './definitions.js';
import {
  appUserCheck,
  connectionCheck,
  directoriesCheck,
  migratingHostsCheck,
  provisionCheck,
  rolesCheck,
  scratchCheck,
} from './checks.js';
import type { SettingsOf } from './fields.js';
import { configInputs } from './config.js';
import { provisionInputs } from './provision.js';
import { lockInputs, operationConnectionInputs, statusInputs } from './operations.js';
import { recordedRuntimeInputs } from './runtime.js';

// backup-verify names its two hosts itself (backup-host, restore-host) and takes no deploy lock.
const { hosts: _hosts, 'lock-timeout': _lock, ...backupVerifyConnection } = connectionInputs;
void _hosts;
void _lock;

export const actions = {
  release: defineAction({
    name: 'release',
    title: 'metalship release',
    description:
      'Upload a new timestamped release of a Python service, build its virtualenv and check that it imports.',
    inputs: {
      ...connectionInputs,
      ...releaseInputs,
      // Recorded with the release: a switch or rollback to it runs it so.
      'app-user': serviceInputs['app-user'],
      'app-module': serviceInputs['app-module'],
      'uvicorn-args': serviceInputs['uvicorn-args'],
      'worker-command': serviceInputs['worker-command'],
      'scheduler-command': serviceInputs['scheduler-command'],
      'units-ready': serviceInputs['units-ready'],
      'health-path': serviceInputs['health-path'],
      ...configInputs,
    },
    outputs: {
      'release-id': { description: "The new release's id (its directory name)." },
      'release-path': { description: 'Absolute path of the new release on the hosts.' },
      'previous-release-id': {
        description: 'The release current pointed at before (empty on a first deploy).',
      },
      'bytes-uploaded': { description: 'Bytes sent to each host for the code (summed over hosts).' },
      ...commonOutputs,
    },
    check: (s) => [
      ...connectionCheck(s.hosts, s),
      ...rolesCheck(s),
      ...appUserCheck(s.hosts, s),
      ...serviceUrlCheck(s),
    ],
  }),
  switch: defineAction({
    name: 'switch',
    title: 'metalship switch',
    description:
      'Start a release beside the serving one, move traffic to it once ready, point current at it, restart worker and scheduler.',
    inputs: {
      ...connectionInputs,
      ...serviceInputs,
      ...recordedRuntimeInputs,
      ...switchOnlyInputs,
      ...configInputs,
    },
    outputs: {
      'release-id': { description: 'The release now current.' },
      'previous-release-id': { description: 'The release that was current before.' },
      ...commonOutputs,
    },
    check: (s) => [...connectionCheck(s.hosts, s), ...rolesCheck(s), ...appUserCheck(s.hosts, s)],
  }),
  verify: defineAction({
    name: 'verify',
    title: 'metalship verify',
    description: 'Check that the current release is healthy on every host, until healthy or timed out.',
    inputs: {
      ...connectionInputs,
      'health-path': recordedRuntimeInputs['health-path'],
      'worker-command': recordedRuntimeInputs['worker-command'],
      'scheduler-command': recordedRuntimeInputs['scheduler-command'],
      'units-ready': recordedRuntimeInputs['units-ready'],
      ...verifyInputs,
      ...configInputs,
    },
    outputs: {
      healthy: { description: 'true when every host passed.' },
      attempts: { description: 'Checks made (the largest count over hosts).' },
      'duration-seconds': { description: 'Seconds until healthy or failed.' },
      ...commonOutputs,
    },
    check: (s) => [...connectionCheck(s.hosts, s), ...rolesCheck(s)],
  }),
  migrate: defineAction({
    name: 'migrate',
    title: 'metalship migrate',
    description:
      'Run database migrations for a release once (on one host), after a pg_dump backup, under a PostgreSQL advisory lock.',
    inputs: { ...connectionInputs, 'app-user': serviceInputs['app-user'], ...migrateInputs, ...configInputs },
    outputs: {
      'revision-before': {
        description: 'Schema revision before the migration (empty for an empty database).',
      },
      'revision-after': { description: 'Schema revision after the migration.' },
      'backup-path': {
        description: 'The pre-migration backup on the migrate host (empty when backup is false).',
      },
      changed: { description: 'true when the revision changed.' },
      ...commonOutputs,
    },
    check: migratingHostsCheck,
  }),
  rollback: defineAction({
    name: 'rollback',
    title: 'metalship rollback',
    description:
      'Switch back to the previous good release (or a named one), verify it, and mark the release left as bad.',
    inputs: {
      ...connectionInputs,
      ...serviceInputs,
      ...recordedRuntimeInputs,
      ...rollbackOnlyInputs,
      ...verifyInputs,
      ...rollbackMigrateInputs,
      ...githubDeploymentInputs,
      ...configInputs,
    },
    outputs: {
      'release-id': { description: 'The release now current.' },
      'rolled-back-from': { description: 'The release that was current before the rollback.' },
      ...commonOutputs,
    },
    check: migratingHostsCheck,
  }),
  deploy: defineAction({
    name: 'deploy',
    title: 'metalship deploy',
    description:
      'The whole deploy: release, switch, verify, and roll back automatically when verification fails.',
    inputs: {
      ...connectionInputs,
      ...serviceInputs,
      ...releaseInputs,
      ...deployMigrateInputs,
      ...verifyInputs,
      ...deployOnlyInputs,
      'backup-dir': backupVerifyInputs['backup-dir'],
      ...githubDeploymentInputs,
      ...configInputs,
    },
    outputs: {
      'release-id': { description: 'The release deployed.' },
      'previous-release-id': { description: 'The release that was current before.' },
      'bytes-uploaded': { description: 'Bytes sent for the code (summed over hosts).' },
      healthy: { description: 'true when the new release passed verification.' },
      'rolled-back': {
        description:
          'true when verification failed and the release does not serve: it never took traffic (its checks on its own slot failed), or it was switched back (to the previous release; after a first deploy, to nothing).',
      },
      ...commonOutputs,
    },
    check: (s) => [...migratingHostsCheck(s), ...directoriesCheck(s), ...serviceUrlCheck(s)],
  }),
  'backup-verify': defineAction({
    name: 'backup-verify',
    title: 'metalship backup-verify',
    description:
      'Prove that the newest PostgreSQL backup restores: restore it into a scratch database, compare row counts with its manifest, run amcheck, the checks and a smoke test of the app, then drop it all.',
    inputs: {
      ...backupVerifyConnection,
      ...backupVerifyInputs,
      ...configInputs,
    },
    outputs: {
      'backup-file': { description: 'The backup verified (path on backup-host).' },
      'backup-age-hours': { description: 'Age of that backup when verified: the RPO measured.' },
      'restore-seconds': { description: 'Seconds to copy, restore and check it: the RTO measured.' },
      tables: { description: 'Tables restored.' },
      rows: { description: 'Rows restored, over all tables.' },
      verified: { description: 'true when the backup restored and passed every check.' },
      'last-verified-hours': {
        description:
          'Hours since the previous successful verification recorded on backup-host (empty: none).',
      },
      ...commonOutputs,
    },
    check: (settings) => {
      const hosts = [settings['backup-host'], settings['restore-host']].filter((h) => h !== null);
      return [
        ...connectionCheck(hosts, settings),
        ...appUserCheck(hosts, settings),
        ...scratchCheck(settings),
        ...directoriesCheck(settings),
      ];
    },
  }),
  provision: defineAction({
    name: 'provision',
    title: 'metalship provision',
    description:
      'Converge a Debian 11, 12 or 13, or Ubuntu 22.04 or 24.04 server to the standard: system, firewall, SSH, users, Python, app tree and units, nginx, TLS, PostgreSQL, Redis, logs, monitoring. Idempotent, with a check mode.',
    inputs: {
      ...connectionInputs,
      'app-user': serviceInputs['app-user'],
      'app-module': serviceInputs['app-module'],
      'uvicorn-args': serviceInputs['uvicorn-args'],
      'worker-command': serviceInputs['worker-command'],
      'scheduler-command': serviceInputs['scheduler-command'],
      'units-ready': serviceInputs['units-ready'],
      'health-path': serviceInputs['health-path'],
      'server-name': serviceInputs['server-name'],
      ...provisionInputs,
      ...configInputs,
    },
    outputs: {
      changed: { description: 'Items changed (or, with check: true, that would change), summed over hosts.' },
      failed: { description: 'Items that failed, summed over hosts.' },
      python: { description: "The Python interpreter provisioned, for the release action's python input." },
      ...commonOutputs,
    },
    check: (s) => [
      ...connectionCheck(s.hosts, s),
      ...rolesCheck(s),
      ...appUserCheck(s.hosts, s),
      ...directoriesCheck(s),
      ...provisionCheck(s),
    ],
  }),
  status: defineAction({
    name: 'status',
    title: 'metalship status',
    description:
      "Show an app's state on each host: its releases (current, standby, bad), the deploy lock and its holder, a deploy freeze, and the last entries of the history log. Changes nothing.",
    inputs: { ...operationConnectionInputs, ...statusInputs, ...configInputs },
    outputs: {
      frozen: { description: 'true when deploys are frozen on any host.' },
      status: {
        description:
          'JSON array, one object per host: host, ok, current, standby, slot, releases (id, status, role, revision), locked, holder, frozen, freeze, history.',
      },
      ...commonOutputs,
    },
    check: (s) => connectionCheck(s.hosts, s),
  }),
  lock: defineAction({
    name: 'lock',
    title: 'metalship lock',
    description:
      "Freeze an app's deploys, e.g. during an incident: deploy, release, switch and migrate are refused on the hosts, printing the reason, until unlock. A rollback still passes (with a warning). A deploy already running is not stopped.",
    inputs: { ...operationConnectionInputs, ...lockInputs, ...configInputs },
    outputs: { ...commonOutputs },
    check: (s) => connectionCheck(s.hosts, s),
  }),
  unlock: defineAction({
    name: 'unlock',
    title: 'metalship unlock',
    description: "Lift the deploy freeze set by lock: the app's deploys run again.",
    inputs: { ...operationConnectionInputs, ...configInputs },
    outputs: {
      'was-frozen': { description: 'true when a freeze was lifted on any host.' },
      ...commonOutputs,
    },
    check: (s) => connectionCheck(s.hosts, s),
  }),
} satisfies Record<string, ActionDef>;

export type ActionName = keyof typeof actions;

/** The action's own cross-input checks, on settings of its inputs. */
export function checkSettings<A extends ActionName>(
  action: A,
  settings: SettingsOf<(typeof actions)[A]['inputs']>,
): string[] {
  // Each action's check takes its own settings; the map of them is one type only here.
  const check = actions[action].check as ((s: typeof settings) => string[]) | undefined;
  return check?.(settings) ?? [];
}
export const ACTION_NAMES = Object.keys(actions) as ActionName[];
