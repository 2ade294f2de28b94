// Firewall: ufw denies incoming by default and allows the port sshd really
// listens on (sshd -T, and Ubuntu's ssh.socket), 80/443 with nginx, and extra
// ports. The SSH port is allowed before ufw is enabled; the stage then tests a
// fresh connection and the change is reverted (ufw disabled) if it fails.

import { sh } from '../sh.js';
import { itemScript, type Item } from './common.js';
import { hasSite, postgresqlHere, type ProvisionSettings } from './settings.js';

/** Bash that sets $ssh_ports to the TCP ports sshd listens on: ssh.socket's when it is in use, else sshd -T's. */
export const SSH_PORTS = [
  'ssh_ports=""',
  // Ubuntu 22.10+: sshd is socket-activated, and the socket's ListenStream= is what listens.
  'if systemctl is-enabled --quiet ssh.socket 2>/dev/null || systemctl is-active --quiet ssh.socket 2>/dev/null; then',
  '  ssh_ports=$(systemctl show ssh.socket -p Listen --value 2>/dev/null | tr " " "\\n" | sed -n "s/.*:\\([0-9][0-9]*\\)$/\\1/p; s/^\\([0-9][0-9]*\\)$/\\1/p")',
  'fi',
  'if [ -z "$ssh_ports" ]; then ssh_ports=$(sshd -T 2>/dev/null | awk \'$1 == "port" { print $2 }\'); fi',
  '# shellcheck disable=SC2086 # the port list is split into words on purpose',
  'ssh_ports=$(printf "%s\\n" $ssh_ports | sort -un | tr "\\n" " ")',
  'if [ -z "${ssh_ports// /}" ]; then echo "cannot tell which port sshd listens on (sshd -T and ssh.socket said nothing): not enabling the firewall" >&2; exit 1; fi',
].join('\n');

export const FIREWALL_REVERT_UNIT = 'metalship-revert-firewall';

export function firewallRules(s: ProvisionSettings): string[] {
  const rules = [...(s.nginx.enabled && hasSite(s) ? ['80/tcp', '443/tcp'] : []), ...s.firewall.allow];
  return [...new Set(rules)];
}

/** Sources and ports opened to them alone: PostgreSQL and Redis on their own hosts, remote PostgreSQL networks. */
export function sourceRules(s: ProvisionSettings): { from: string; port: number }[] {
  return [
    ...(s.postgresql.enabled && s.serves.db ? s.topology.appAddresses : []).map((from) => ({
      from,
      port: 5432,
    })),
    ...(postgresqlHere(s) ? s.postgresql.remoteCidrs : []).map((from) => ({ from, port: 5432 })),
    ...(s.redis.enabled && s.serves.redis ? s.topology.appAddresses : []).map((from) => ({
      from,
      port: 6379,
    })),
  ];
}

export function firewallItem(settings: ProvisionSettings): Item {
  const rules = firewallRules(settings);
  return {
    name: 'firewall',
    script: itemScript(
      settings.check,
      'ms_install ufw',
      SSH_PORTS,
      'added=$(ufw show added 2>/dev/null || true)',
      // ufw allow is idempotent, but only a rule not yet there is a change.
      'ms_rule() { local want="ufw $*"; if ! printf "%s\\n" "$added" | grep -qxF -- "$want"; then ms_changed "rule: $*"; ms_apply ufw "$@" >/dev/null; fi; }',
      'for p in $ssh_ports; do ms_rule allow "$p/tcp"; done',
      ...rules.map((r) => sh`ms_rule allow ${r}`),
      ...sourceRules(settings).map(
        (r) => sh`ms_rule allow from ${r.from} to any port ${String(r.port)} proto tcp`,
      ),
      'if ! grep -q \'^DEFAULT_INPUT_POLICY="DROP"\' /etc/default/ufw; then ms_changed "default incoming policy: deny"; ms_apply ufw default deny incoming >/dev/null; fi',
      'if ! grep -q \'^DEFAULT_OUTPUT_POLICY="ACCEPT"\' /etc/default/ufw; then ms_changed "default outgoing policy: allow"; ms_apply ufw default allow outgoing >/dev/null; fi',
      'if ! ufw status 2>/dev/null | grep -q "^Status: active"; then',
      '  ms_changed "ufw enabled (ssh on $ssh_ports)"',
      '  if [ "$CHECK" != 1 ]; then',
      // Safety net: if the runner never confirms (cut off, killed), the firewall goes off again by itself.
      sh`    systemd-run --quiet --unit=${FIREWALL_REVERT_UNIT} --on-active=180 /usr/sbin/ufw disable >/dev/null 2>&1 || true`,
      '    ufw --force enable >/dev/null',
      '    echo "guard firewall"',
      '  fi',
      'fi',
    ),
    guard: {
      confirm: sh`systemctl stop ${FIREWALL_REVERT_UNIT}.timer 2>/dev/null || true`,
      revert: sh`ufw --force disable >/dev/null; systemctl stop ${FIREWALL_REVERT_UNIT}.timer 2>/dev/null || true; echo "firewall disabled again"`,
    },
  };
}
