// System: package index, base packages, unattended-upgrades for security
// updates (and pending ones applied now), kernel hardening sysctls.

import { file, itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

export const BASE_PACKAGES = ['ca-certificates', 'curl', 'unattended-upgrades', 'logrotate', 'openssl'];

const AUTO_UPGRADES = `// Managed by metalship: daily package lists and unattended security upgrades.
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
APT::Periodic::AutocleanInterval "7";
`;

/**
 * Security origins only (Debian, Ubuntu and Ubuntu Pro's ESM). apt appends list
 * entries across files, so the packages' own defaults (Debian's point releases,
 * Ubuntu's Allowed-Origins) are cleared first.
 */
export const UNATTENDED = `// Managed by metalship: security updates only.
#clear Unattended-Upgrade::Origins-Pattern;
#clear Unattended-Upgrade::Allowed-Origins;
Unattended-Upgrade::Origins-Pattern {
        "origin=Debian,codename=\${distro_codename}-security,label=Debian-Security";
        "origin=Debian,codename=\${distro_codename},label=Debian-Security";
        "origin=Ubuntu,archive=\${distro_codename}-security,label=Ubuntu";
        "origin=UbuntuESMApps,archive=\${distro_codename}-apps-security";
        "origin=UbuntuESM,archive=\${distro_codename}-infra-security";
};
Unattended-Upgrade::Remove-Unused-Dependencies "true";
Unattended-Upgrade::Automatic-Reboot "false";
`;

export function systemItem(settings: ProvisionSettings): Item {
  return {
    name: 'system',
    script: itemScript(
      settings.check,
      'ms_refresh_index',
      `ms_install ${BASE_PACKAGES.join(' ')}`,
      file('/etc/apt/apt.conf.d/20auto-upgrades', AUTO_UPGRADES, { label: 'unattended-upgrades schedule' }),
      file('/etc/apt/apt.conf.d/52metalship-unattended-upgrades', UNATTENDED, {
        label: 'unattended-upgrades security origins',
      }),
      'for t in apt-daily.timer apt-daily-upgrade.timer; do',
      '  if systemctl list-unit-files "$t" >/dev/null 2>&1 && ! systemctl is-enabled --quiet "$t" 2>/dev/null; then',
      '    ms_changed "$t enabled"; ms_apply systemctl enable --now --quiet "$t"',
      '  fi',
      'done',
      settings.system.securityUpdates
        ? [
            // The pending security updates, from unattended-upgrade's own dry run.
            'pending=$(unattended-upgrade --dry-run -v 2>/dev/null | sed -n "s/^Packages that will be upgraded: //p" | head -1)',
            'if [ -n "$pending" ]; then',
            '  if [ "$CHECK" = 1 ]; then ms_changed "security updates pending: $pending"',
            '  else unattended-upgrade >/dev/null 2>&1 || { echo "unattended-upgrade failed: see /var/log/unattended-upgrades" >&2; exit 1; }; ms_changed "security updates installed: $pending"; fi',
            'fi',
          ].join('\n')
        : null,
    ),
  };
}

/** Kernel settings of the usual hardening baselines (CIS, lynis). */
export const SYSCTLS: Record<string, string> = {
  'kernel.kptr_restrict': '2',
  'kernel.dmesg_restrict': '1',
  'kernel.sysrq': '0',
  'kernel.yama.ptrace_scope': '1',
  'fs.protected_hardlinks': '1',
  'fs.protected_symlinks': '1',
  'fs.suid_dumpable': '0',
  'net.ipv4.tcp_syncookies': '1',
  'net.ipv4.conf.all.accept_redirects': '0',
  'net.ipv4.conf.default.accept_redirects': '0',
  'net.ipv4.conf.all.send_redirects': '0',
  'net.ipv4.conf.default.send_redirects': '0',
  'net.ipv4.conf.all.accept_source_route': '0',
  'net.ipv4.conf.all.rp_filter': '1',
  'net.ipv4.conf.all.log_martians': '1',
  'net.ipv6.conf.all.accept_redirects': '0',
  'net.ipv6.conf.default.accept_redirects': '0',
};

export const SYSCTL_FILE = '/etc/sysctl.d/60-metalship.conf';

/**
 * Writes the sysctl file and checks the running values. Where /proc/sys is
 * read-only (containers), a value that cannot be applied is a warning.
 */
export function sysctlItem(settings: ProvisionSettings): Item {
  const content =
    '# Managed by metalship: kernel hardening.\n' +
    Object.entries(SYSCTLS)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n') +
    '\n';
  return {
    name: 'sysctl',
    script: itemScript(
      settings.check,
      file(SYSCTL_FILE, content, { label: 'sysctl hardening file' }),
      'differ=""',
      ...Object.entries(SYSCTLS).map(
        ([k, v]) =>
          `cur=$(sysctl -n ${k} 2>/dev/null || echo absent); if [ "$cur" != absent ] && [ "$cur" != ${v} ]; then differ="$differ ${k}"; fi`,
      ),
      'if [ -n "$differ" ]; then',
      '  if [ ! -w /proc/sys/kernel ]; then ms_warn "cannot set kernel parameters here (/proc/sys is read-only, a container?):$differ"',
      '  elif [ "$CHECK" = 1 ]; then ms_changed "sysctls to apply:$differ"',
      `  elif sysctl -q -p ${SYSCTL_FILE} >/dev/null 2>&1; then ms_changed "sysctls applied:$differ"`,
      '  else ms_warn "some kernel parameters could not be set:$differ"; fi',
      'fi',
    ),
  };
}
