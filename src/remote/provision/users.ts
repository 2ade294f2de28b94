// Users: the app user (no login shell) owning the app tree, and optionally a
// deploy user whose sudo covers exactly the command the actions run.

import { ensureAppTree } from '../release.js';
import { remoteCommand, SCRIPT_SHELL } from '../session.js';
import { sudoersName } from '../quoting.js';
import { raw, sh } from '../sh.js';
import { file, itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

export const SHARED_PATHS = ['logs', 'uploads', '.env'];

/**
 * The sudoers rule of the deploy user: the actions run `sudo -n -H -- bash -se`
 * and nothing else. That command is root-equivalent (it runs any script), so
 * the rule limits what the user can be used for, not what it could do.
 */
export function sudoersRule(user: string): string {
  const [shell, ...args] = SCRIPT_SHELL;
  const name = sudoersName(user);
  return `# Managed by metalship: the deploy actions run '${remoteCommand(user)}' and nothing else.
Defaults:${name} !requiretty
${name} ALL=(root) NOPASSWD: /usr/bin/${shell} ${args.join(' ')}, /bin/${shell} ${args.join(' ')}
`;
}

export function usersItem(settings: ProvisionSettings): Item {
  const layout = settings.layout;
  const deployUser = settings.deployUser;
  const dirs = [
    layout.root,
    layout.releases,
    layout.venvs,
    layout.slots,
    layout.shared,
    `${layout.shared}/logs`,
    `${layout.shared}/uploads`,
    layout.state,
  ];
  return {
    name: 'users',
    script: itemScript(
      settings.check,
      'if [ "$CHECK" = 1 ]; then',
      sh`  if ! id -u ${settings.user} >/dev/null 2>&1; then ms_changed ${'app user ' + settings.user + ' missing'}; fi`,
      sh`  if ! id -u ${layout.buildUser} >/dev/null 2>&1; then ms_changed ${'build user ' + layout.buildUser + ' missing'}; fi`,
      sh`  for d in ${dirs}; do [ -d "$d" ] || ms_changed "directory $d missing"; done`,
      'else',
      ensureAppTree(layout, settings.user, SHARED_PATHS),
      'fi',
      // The app user never logs in.
      sh`if id -u ${settings.user} >/dev/null 2>&1 && [ "$(getent passwd ${settings.user} | cut -d: -f7)" != /usr/sbin/nologin ]; then ms_changed ${'login shell of ' + settings.user + ' removed'}; ms_apply usermod -s /usr/sbin/nologin ${settings.user}; fi`,
      deployUser
        ? [
            sh`if ! id -u ${deployUser.name} >/dev/null 2>&1; then ms_changed ${'deploy user ' + deployUser.name + ' created'}; ms_apply useradd --create-home --shell /bin/bash ${deployUser.name}; fi`,
            sh`if [ "$CHECK" = 1 ] && ! id -u ${deployUser.name} >/dev/null 2>&1; then exit 0; fi`,
            sh`home=$(getent passwd ${deployUser.name} | cut -d: -f6)`,
            sh`if [ ! -d "$home/.ssh" ]; then ms_apply install -d -m 700 -o ${deployUser.name} -g ${deployUser.name} "$home/.ssh"; fi`,
            file(raw('"$home/.ssh/authorized_keys"'), deployUser.keys.join('\n') + '\n', {
              mode: '600',
              owner: `${deployUser.name}:${deployUser.name}`,
              label: `authorized keys of ${deployUser.name}`,
            }),
            'ms_install sudo',
            sh`sudoers=/etc/sudoers.d/metalship-${deployUser.name}`,
            sh`tmp=$(mktemp); cat > "$tmp" <<'MS_SUDO_EOF'`,
            sudoersRule(deployUser.name) + 'MS_SUDO_EOF',
            'if ! visudo -cqf "$tmp" >/dev/null; then rm -f "$tmp"; echo "visudo rejected the sudoers rule" >&2; exit 1; fi',
            'if [ -f "$sudoers" ] && cmp -s "$tmp" "$sudoers" && [ "$(stat -c %a "$sudoers")" = 440 ]; then rm -f "$tmp"',
            'elif [ "$CHECK" = 1 ]; then rm -f "$tmp"; ms_changed "sudoers rule of the deploy user differs or is missing"',
            'else chmod 440 "$tmp"; mv -f "$tmp" "$sudoers"; ms_changed "sudoers rule of the deploy user written"; fi',
          ].join('\n')
        : null,
    ),
  };
}
