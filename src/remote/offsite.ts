// Backups that leave the host: after each daily backup the database's host
// pushes the dump and its manifest to the backup host (roles=backup) over SSH,
// with a key of its own (root's) that the backup host accepts for one thing
// only: `restrict,command=` runs the receiver (src/remote/sh/backup-receive.sh)
// as an unprivileged user, which adds a new copy after checking it against its
// manifest, never replaces, reads or deletes one on request, and prunes its own
// copies by age. The pusher (src/remote/sh/backup-push.sh) trusts only the
// backup host's key as provision read it over the runner's pinned connection.

import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { BackupOptions } from './backup.js';
import { assignments, keyLines, script, sh, shellFile, textVar } from './sh.js';
import { step, type Step } from './step.js';

/** The receiving user on the backup host: no password, its one key line per pusher runs the receiver. */
export const RECEIVER_USER = 'metalship-backup';
export const RECEIVER_HOME = '/var/lib/metalship-backup';
export const RECEIVER_AUTHORIZED_KEYS = `${RECEIVER_HOME}/.ssh/authorized_keys`;

/** How the receiver ends when it refuses: told apart by these, never by the message. */
export const RECEIVE_EXIT = {
  /** Anything but `put <name of a backup of this database>`. */
  refused: 2,
  /** A copy of that name is there: never replaced. */
  exists: 3,
  /** The dump is not what its manifest says (size, sha256), or the manifest is not ours. */
  mismatch: 4,
  /** Storing it would cross a limit: the most copies kept, or the free space left. */
  full: 5,
  /** Something else is under its name (not the same dump), or it could not be stored. */
  failed: 6,
} as const;

/** The receiver's limits: a push key holder can fill neither the disk nor the directory. */
export interface ReceiveLimits {
  /** The most copies of the database kept (retention keeps about one a day). */
  maxCopies: number;
  /** The free space (MB) a copy must leave on the backup host's file system. */
  minFreeMb: number;
}

/** A copy's stamp may be this far ahead of the backup host's clock (s), and this old at most (s): a push comes right after its backup. */
const STAMP_SKEW = 300;
const STAMP_WINDOW = 86400;

export function receiveLimits(retentionDays: number): ReceiveLimits {
  return { maxCopies: 2 * retentionDays + 10, minFreeMb: 1024 };
}

export function receiverProgramPath(app: string): string {
  return `/usr/local/sbin/metalship-backup-receive-${app}`;
}

export function pushProgramPath(app: string): string {
  return `/usr/local/sbin/metalship-backup-push-${app}`;
}

/** Root's push key and the backup host's pinned keys, on the database's host (700, root). */
export function pushPaths(app: string): { dir: string; key: string; knownHosts: string } {
  const dir = `/etc/metalship/backup-push-${app}`;
  return { dir, key: `${dir}/id_ed25519`, knownHosts: `${dir}/known_hosts` };
}

/** The comment that marks an app's key lines in the receiving user's authorized_keys. */
export function keyMarker(app: string): string {
  return `metalship-backup-push:${app}`;
}

/** Where the record of the last restore test of the copies is: beside their directory (which the receiving user owns), root's. */
export function copyVerifiedPath(backupDir: string): string {
  const cut = backupDir.lastIndexOf('/');
  return `${backupDir.slice(0, cut) || '/'}/.${backupDir.slice(cut + 1)}.last-verified.json`.replace(
    '//',
    '/',
  );
}

const RECEIVE_SH = shellFile(readFileSync(new URL('./sh/backup-receive.sh', import.meta.url), 'utf8'));
const CHECK_MANIFEST = readFileSync(new URL('./py/receive_manifest.py', import.meta.url), 'utf8');
const PUSH_SH = shellFile(readFileSync(new URL('./sh/backup-push.sh', import.meta.url), 'utf8'));

/** What follows `<database>_` in the name a put may carry: a stamp (checked as a time by the receiver) and the daily label, the only one pushed. */
const NAME_PATTERN = '[0-9]{8}T[0-9]{6}Z_daily';

/** The receiver program on the backup host (the push key's forced command). */
export function receiverProgram(
  opts: BackupOptions,
  limits: ReceiveLimits = receiveLimits(opts.retentionDays),
): string {
  return script(
    '#!/bin/bash',
    sh`# metalship-backup-receive-${opts.app}: adds a pushed copy of a backup of ${opts.database}. Managed by metalship; changes are overwritten.`,
    assignments({
      DB: opts.database,
      DIR: opts.backupDir,
      RETENTION_DAYS: opts.retentionDays,
      NAME_PATTERN,
      SKEW: STAMP_SKEW,
      WINDOW: STAMP_WINDOW,
      MAX_COPIES: limits.maxCopies,
      MIN_FREE_MB: limits.minFreeMb,
      EXIT_REFUSED: RECEIVE_EXIT.refused,
      EXIT_EXISTS: RECEIVE_EXIT.exists,
      EXIT_MISMATCH: RECEIVE_EXIT.mismatch,
      EXIT_FULL: RECEIVE_EXIT.full,
      EXIT_FAILED: RECEIVE_EXIT.failed,
    }),
    textVar('CHECK_MANIFEST', CHECK_MANIFEST),
    RECEIVE_SH,
  );
}

export interface PushTarget {
  /** The backup host's address as the database's host reaches it, and its SSH port. */
  address: string;
  port: number;
  /** Its host keys (`type base64`), read over the runner's pinned connection. */
  hostKeys: string[];
}

/** The push program on the database's host. Usage: `metalship-backup-push-{app} DUMP`. */
export function pushProgram(app: string, backupDir: string, target: PushTarget): string {
  const p = pushPaths(app);
  return script(
    '#!/bin/bash',
    sh`# metalship-backup-push-${app}: copies a backup to ${target.address}. Managed by metalship; changes are overwritten.`,
    assignments({
      DIR: backupDir,
      TARGET_HOST: target.address,
      TARGET_PORT: target.port,
      TARGET_USER: RECEIVER_USER,
      KEY: p.key,
      KNOWN_HOSTS: p.knownHosts,
      EXIT_EXISTS: RECEIVE_EXIT.exists,
    }),
    PUSH_SH,
  );
}

/** The pinned known_hosts of the push: the backup host's keys under the address the push connects to. */
export function pushKnownHosts(target: PushTarget): string {
  const name = target.port === 22 ? target.address : `[${target.address}]:${target.port}`;
  return target.hostKeys.map((k) => `${name} ${k}\n`).join('');
}

/** A pusher's public key; address: the IP the backup host sees its pushes from, when the hosts input tells it. */
export interface PushKey {
  from: string;
  key: string;
  address?: string;
}

/** One pusher's line in the receiving user's authorized_keys: it runs the receiver, nothing else, and only from its address when known. */
export function receiverKeyLine(app: string, pusher: PushKey): string {
  const [type, body] = pusher.key.trim().split(/\s+/);
  if (!type || !body || !/^ssh-ed25519$/.test(type) || !/^[A-Za-z0-9+/]+=*$/.test(body))
    throw new Error(`the push key of ${pusher.from} is not an ed25519 public key`);
  const address = pusher.address;
  if (address !== undefined && !isIP(address)) throw new Error(`${address} is not an IP address`);
  return `restrict,${address ? `from="${address}",` : ''}command="${receiverProgramPath(app)}" ${type} ${body} ${keyMarker(app)}:${pusher.from.replace(/[^A-Za-z0-9.:_@[\]-]/g, '_')}`;
}

/**
 * On the database's host: root's push key, made when missing (not in check
 * mode); gives its public half, or null when there is none yet.
 */
export function pushKeyStep(app: string, check: boolean): Step<string | null> {
  const p = pushPaths(app);
  return step(
    'the backup push key',
    script(
      check
        ? null
        : script(
            sh`install -d -m 700 -o root -g root ${p.dir}`,
            sh`if [ ! -f ${p.key} ]; then ssh-keygen -q -t ed25519 -N '' -C ${keyMarker(app)} -f ${p.key} >/dev/null; fi`,
            sh`chmod 600 ${p.key}`,
          ),
      sh`if [ -f ${p.key + '.pub'} ]; then echo "PUBKEY $(cut -d' ' -f1,2 ${p.key + '.pub'})"; fi`,
    ),
    (stdout) => keyLines(stdout).get('PUBKEY') ?? null,
  );
}

/** On the backup host: its SSH host keys (`type base64`), for the pusher to pin. */
export function hostKeysStep(): Step<string[]> {
  return step(
    'the backup host keys',
    script(
      'for f in /etc/ssh/ssh_host_*_key.pub; do [ -f "$f" ] && echo "HOSTKEY $(cut -d\' \' -f1,2 "$f")"; done; true',
    ),
    (stdout) =>
      keyLines(stdout)
        .all('HOSTKEY')
        .filter((k) => /^[a-z0-9-]+ [A-Za-z0-9+/]+=*$/.test(k)),
  );
}
