// SSH: key-only login through a drop-in read before any other (sshd uses the
// first value it finds), checked against sshd -T's effective values, validated
// with sshd -t before a reload. The stage then tests a fresh connection; if it
// fails the previous drop-in comes back. Ubuntu 22.10+ runs sshd socket-activated
// (ssh.socket): the service is reloaded when it runs, and nothing else is needed
// while the port stays the same.

import { sh } from '../sh.js';
import { itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

export const SSHD_DROPIN = '/etc/ssh/sshd_config.d/00-metalship.conf';
const BACKUP = '/etc/ssh/.00-metalship.conf.previous';
export const SSH_REVERT_UNIT = 'metalship-revert-sshd';

/** Options set, with the value sshd -T reports for them (lowercase keys). */
export function sshdOptions(settings: ProvisionSettings): [string, string][] {
  return [
    ['PermitRootLogin', settings.ssh.rootLogin === 'no' ? 'no' : 'without-password'],
    ['PasswordAuthentication', 'no'],
    ['KbdInteractiveAuthentication', 'no'],
    ['PermitEmptyPasswords', 'no'],
    ['PubkeyAuthentication', 'yes'],
    ['AuthenticationMethods', 'publickey'],
    ['MaxAuthTries', '3'],
    ['LoginGraceTime', '30'],
    ['X11Forwarding', 'no'],
    ['AllowAgentForwarding', 'no'],
    ['PermitUserEnvironment', 'no'],
    ['ClientAliveInterval', '300'],
    ['ClientAliveCountMax', '2'],
  ];
}

/**
 * Algorithms: the modern ones that this sshd knows, in this order (filtered by
 * `ssh -Q` at run time, so an older or newer OpenSSH never gets a name it
 * rejects). curve25519 stays: ssh2 (the actions' client) has no post-quantum kex.
 */
export const KEX = [
  'mlkem768x25519-sha256',
  'sntrup761x25519-sha512',
  'sntrup761x25519-sha512@openssh.com',
  'curve25519-sha256',
  'curve25519-sha256@libssh.org',
  'diffie-hellman-group16-sha512',
  'diffie-hellman-group18-sha512',
];
export const CIPHERS = [
  'chacha20-poly1305@openssh.com',
  'aes256-gcm@openssh.com',
  'aes128-gcm@openssh.com',
  'aes256-ctr',
  'aes192-ctr',
  'aes128-ctr',
];
export const MACS = [
  'hmac-sha2-512-etm@openssh.com',
  'hmac-sha2-256-etm@openssh.com',
  'umac-128-etm@openssh.com',
];
export const HOSTKEY_ALGS = [
  'ssh-ed25519',
  'ssh-ed25519-cert-v01@openssh.com',
  'rsa-sha2-512',
  'rsa-sha2-256',
];

/**
 * The drop-in's fixed part (the algorithm lines are added on the host). Its
 * values are our own or a choice input's; none needs sshd quoting.
 */
export function sshdDropIn(settings: ProvisionSettings): string {
  return [
    '# Managed by metalship: key-only SSH. Read before the other files of this',
    '# directory, so its values win (sshd keeps the first value of each option).',
    ...sshdOptions(settings).map(([k, v]) => `${k} ${k === 'PermitRootLogin' ? settings.ssh.rootLogin : v}`),
    'ChallengeResponseAuthentication no',
  ].join('\n');
}

/**
 * ms_known KIND NAME...: the NAMEs this host's OpenSSH knows, comma-separated.
 * Host key algorithms are signature names (rsa-sha2-512), which `ssh -Q key`
 * does not list: `key-sig` does (OpenSSH 8.2+), with `key` as the fallback.
 */
export const KNOWN_ALGORITHMS =
  'ms_known() { local kind=$1; shift; local have; have=$(ssh -Q "$kind" 2>/dev/null; if [ "$kind" = key-sig ]; then ssh -Q key 2>/dev/null; fi); local out=""; for n in "$@"; do if printf "%s\\n" "$have" | grep -qxF -- "$n"; then out="$out${out:+,}$n"; fi; done; printf "%s" "$out"; }';

function known(kind: string, names: string[]): string {
  return `$(ms_known ${kind} ${names.join(' ')})`;
}

export function sshItem(settings: ProvisionSettings): Item {
  const opts = sshdOptions(settings);
  const header = sshdDropIn(settings);
  // The algorithm lines are filled in on the host from what its sshd supports.
  const algLines = [
    `"KexAlgorithms ${known('kex', KEX)}"`,
    `"Ciphers ${known('cipher', CIPHERS)}"`,
    `"MACs ${known('mac', MACS)}"`,
    `"HostKeyAlgorithms ${known('key-sig', HOSTKEY_ALGS)}"`,
  ].join(' ');
  return {
    name: 'ssh',
    script: itemScript(
      settings.check,
      'command -v sshd >/dev/null || { echo "sshd is not installed" >&2; exit 1; }',
      KNOWN_ALGORITHMS,
      'mkdir -p /etc/ssh/sshd_config.d',
      // Without the Include (very old or edited sshd_config), a drop-in does nothing.
      'if ! grep -qiE "^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\\.d/\\*\\.conf" /etc/ssh/sshd_config; then',
      '  echo "/etc/ssh/sshd_config does not include /etc/ssh/sshd_config.d/*.conf: add \'Include /etc/ssh/sshd_config.d/*.conf\' at its top" >&2; exit 1',
      'fi',
      `want=$(cat <<'MS_SSHD_EOF'\n${header}\nMS_SSHD_EOF\n)`,
      // An algorithm list this sshd cannot satisfy at all is left out.
      `want=$(printf "%s\\n" "$want" ${algLines} | grep -v " $")`,
      // Drift: the effective values (sshd -T) and the drop-in's content.
      'eff=$(sshd -T -C user=root,host=localhost,addr=127.0.0.1 2>/dev/null || sshd -T 2>/dev/null)',
      'drift=""',
      ...opts.map(
        ([k, v]) =>
          sh`got=$(printf "%s\\n" "$eff" | awk -v k=${k.toLowerCase()} '$1 == k && !seen { $1 = ""; sub(/^ /, ""); print; seen = 1 }'); if [ "$got" != ${v} ]; then drift="$drift ${k.toLowerCase()}=\${got:-unset}(want ${v})"; fi`,
      ),
      sh`if [ -f ${SSHD_DROPIN} ] && [ "$(cat ${SSHD_DROPIN})" = "$want" ]; then same=1; else same=0; fi`,
      'if [ "$same" = 1 ] && [ -z "$drift" ]; then exit 0; fi',
      'if [ "$CHECK" = 1 ]; then',
      sh`  if [ "$same" = 0 ]; then if [ -f ${SSHD_DROPIN} ]; then ms_changed "sshd drop-in differs"; else ms_changed "sshd drop-in missing"; fi; fi`,
      '  if [ -n "$drift" ]; then ms_changed "sshd options:$drift"; fi',
      '  exit 0',
      'fi',
      sh`if [ "$same" = 1 ]; then echo "sshd options still differ with the drop-in in place (another file sets them first):$drift" >&2; exit 1; fi`,
      sh`rm -f ${BACKUP}; if [ -f ${SSHD_DROPIN} ]; then cp -p ${SSHD_DROPIN} ${BACKUP}; fi`,
      sh`printf "%s\\n" "$want" > ${SSHD_DROPIN}.new && chmod 644 ${SSHD_DROPIN}.new && mv -f ${SSHD_DROPIN}.new ${SSHD_DROPIN}`,
      `if ! err=$(sshd -t 2>&1); then ${restoreLines()}; echo "sshd -t rejected the new configuration (restored the previous one): $err" >&2; exit 1; fi`,
      sh`eff=$(sshd -T -C user=root,host=localhost,addr=127.0.0.1 2>/dev/null || sshd -T 2>/dev/null); left=""`,
      ...opts.map(
        ([k, v]) =>
          sh`got=$(printf "%s\\n" "$eff" | awk -v k=${k.toLowerCase()} '$1 == k && !seen { $1 = ""; sub(/^ /, ""); print; seen = 1 }'); if [ "$got" != ${v} ]; then left="$left ${k.toLowerCase()}=\${got:-unset}"; fi`,
      ),
      `if [ -n "$left" ]; then ${restoreLines()}; echo "another sshd configuration file sets these first, so the drop-in cannot take effect:$left" >&2; exit 1; fi`,
      // Safety net: without a confirmation from a fresh connection, the previous drop-in comes back by itself.
      sh`systemd-run --quiet --unit=${SSH_REVERT_UNIT} --on-active=180 /bin/sh -c ${revertCommand()} >/dev/null 2>&1 || true`,
      reloadOneLine(),
      // sshd re-executes itself on a reload: give it a moment before the fresh connection.
      'sleep 1',
      'ms_changed "sshd drop-in written (key-only login)${drift:+; was:$drift}"',
      'echo "guard ssh"',
    ),
    guard: {
      confirm: sh`systemctl stop ${SSH_REVERT_UNIT}.timer 2>/dev/null || true; rm -f ${BACKUP}`,
      revert: script2(
        sh`systemctl stop ${SSH_REVERT_UNIT}.timer 2>/dev/null || true`,
        sh`/bin/sh -c ${revertCommand()}`,
        'echo "sshd configuration restored"',
      ),
    },
  };
}

function script2(...lines: string[]): string {
  return lines.join('\n') + '\n';
}

/** Restores the previous drop-in (or removes ours when there was none) and reloads sshd. */
function revertCommand(): string {
  return `if [ -f ${BACKUP} ]; then mv -f ${BACKUP} ${SSHD_DROPIN}; else rm -f ${SSHD_DROPIN}; fi; ${reloadOneLine()}`;
}

function restoreLines(): string {
  return `if [ -f ${BACKUP} ]; then mv -f ${BACKUP} ${SSHD_DROPIN}; else rm -f ${SSHD_DROPIN}; fi`;
}

/**
 * Reloading sshd: Debian and Ubuntu name the service ssh.service. With socket
 * activation (Ubuntu 22.10+) the service may not run yet: then the next
 * connection starts it with the new configuration and nothing needs reloading.
 */
export function reloadOneLine(): string {
  return 'if systemctl is-active --quiet ssh.service; then systemctl reload ssh.service; elif systemctl is-active --quiet sshd.service; then systemctl reload sshd.service; elif systemctl is-active --quiet ssh.socket; then :; else echo "no running sshd to reload" >&2; exit 1; fi';
}
