// The backup copies (see src/remote/offsite.ts): on the database's host the
// push program and the backup host's pinned keys (root's push key is made
// before the items run, by the stage, which hands its public half to the
// backup host); on the backup host the receiving user, its authorized_keys
// (one restricted line per pusher), the receiver and the copies' directory.

import {
  RECEIVER_AUTHORIZED_KEYS,
  RECEIVER_HOME,
  RECEIVER_USER,
  keyMarker,
  pushKnownHosts,
  pushPaths,
  pushProgram,
  pushProgramPath,
  receiverKeyLine,
  receiverProgram,
  receiverProgramPath,
} from '../offsite.js';
import { rootOnly } from '../paths.js';
import { heredoc, raw, sh } from '../sh.js';
import { file, itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

/** The item, or why it does nothing on this host. */
export function offsiteItem(settings: ProvisionSettings): { item: Item | null; off?: string } {
  const { offsite, postgresql: pg } = settings;
  const app = settings.layout.app;
  if (!pg.enabled) return { item: null, off: 'postgresql: false' };
  if (settings.serves.backup) return { item: receiverItem(settings) };
  if (offsite.push === undefined)
    return offsite.pusher
      ? { item: null, off: `${settings.topology.backup?.label ?? 'the backup host'} is not in this run` }
      : { item: null, off: 'no backups here' };
  if (offsite.push === null) {
    const prog = pushProgramPath(app);
    return {
      item: {
        name: 'offsite',
        script: itemScript(
          settings.check,
          sh`if [ -e ${prog} ]; then ms_changed "backup push removed (no roles=backup host)"; ms_apply rm -f ${prog}; else echo "note no roles=backup host: the backups stay here"; fi`,
        ),
      },
    };
  }
  const p = pushPaths(app);
  return {
    item: {
      name: 'offsite',
      script: itemScript(
        settings.check,
        'ms_install openssh-client',
        file(p.knownHosts, pushKnownHosts(offsite.push), { mode: '600', label: 'backup host keys' }),
        file(pushProgramPath(app), pushProgram(app, pg.backupDir, offsite.push), {
          mode: '755',
          label: 'backup push program',
        }),
        sh`echo ${`note each daily backup is copied to ${offsite.push.address}`}`,
      ),
    },
  };
}

function receiverItem(settings: ProvisionSettings): Item {
  const pg = settings.postgresql;
  const app = settings.layout.app;
  const dir = pg.backupDir;
  const parent = dir.slice(0, dir.lastIndexOf('/')) || '/';
  const keys = settings.offsite.receive;
  const ours = keys?.map((k) => receiverKeyLine(app, k)).join('\n') ?? '';
  const doc = heredoc(ours);
  return {
    name: 'offsite',
    script: itemScript(
      settings.check,
      'ms_install openssh-server python3',
      // A system user whose shell runs the forced command; no password (* : not locked, which sshd would refuse) and no key but ours.
      sh`if ! id -u ${RECEIVER_USER} >/dev/null 2>&1; then ms_changed ${'user ' + RECEIVER_USER + ' created'}; ms_apply useradd --system --user-group --password '*' --home-dir ${RECEIVER_HOME} --no-create-home --shell /bin/sh ${RECEIVER_USER}; fi`,
      // Its home and keys are root's: the receiving user cannot add a key of its own.
      sh`for d in ${RECEIVER_HOME} ${RECEIVER_HOME + '/.ssh'}; do if [ "$(stat -c %a:%U -- "$d" 2>/dev/null)" != 755:root ]; then ms_changed "$d"; ms_apply install -d -m 755 -o root -g root "$d"; fi; done`,
      file(
        receiverProgramPath(app),
        receiverProgram({ app, database: pg.database, backupDir: dir, retentionDays: pg.keepDays }),
        {
          mode: '755',
          label: 'backup receiver',
        },
      ),
      keys === undefined
        ? 'echo "note the database host is not in this run: its push key is left as it is"'
        : [
            // The other apps' lines stay; this app's are exactly its pushers'.
            sh`if [ "$CHECK" != 1 ] || [ -d ${RECEIVER_HOME + '/.ssh'} ]; then`,
            sh`{ if [ -f ${RECEIVER_AUTHORIZED_KEYS} ]; then grep -v -F ${' ' + keyMarker(app) + ':'} ${RECEIVER_AUTHORIZED_KEYS} || true; fi; cat ${raw(doc.open)}`,
            doc.body,
            sh`} | ms_file ${RECEIVER_AUTHORIZED_KEYS} 644 root:root ${'push keys of ' + app}`,
            'fi',
          ].join('\n'),
      // The copies: a directory of the receiving user's in one of root's.
      rootOnly(parent),
      sh`if [ ! -d ${parent} ]; then ms_apply install -d -m 755 -o root -g root ${parent}; fi`,
      sh`if [ "$(stat -c %a:%U:%G -- ${dir} 2>/dev/null)" != ${'700:' + RECEIVER_USER + ':' + RECEIVER_USER} ]; then ms_changed ${dir}; if [ "$CHECK" != 1 ]; then install -d -m 700 -o ${RECEIVER_USER} -g ${RECEIVER_USER} ${dir}; chown -h ${RECEIVER_USER + ':' + RECEIVER_USER} ${dir}; chmod 700 ${dir}; fi; fi`,
    ),
  };
}
