// An nginx load balancer in front of the app hosts (provision, roles=lb): its
// upstream lists them (their nginx, port 80 by default). A rolling switch takes
// a batch out of rotation on the app hosts themselves (drainStep).

import type { Layout } from './layout.js';
import { nginxAddress } from './quoting.js';
import { script, sh } from './sh.js';
import { plainStep, type Step } from './step.js';

export interface BalancerMember {
  /** As written in the hosts input, for the comment beside it. */
  label: string;
  host: string;
  port: number;
}

/**
 * Seconds a balancer leaves an app host alone after it refused twice (nginx's
 * fail_timeout): a drained host is used again this long after it is undrained,
 * so a rolling switch waits as long before it drains the next batch.
 */
export const BALANCER_FAIL_TIMEOUT = 1;

export function balancerUpstreamName(l: Layout): string {
  return `${l.app.replace(/-/g, '_')}_fleet`;
}

/** http-level config on the balancer: the app hosts and the WebSocket map. */
export function balancerUpstreamConf(layout: Layout, members: BalancerMember[]): string {
  const name = balancerUpstreamName(layout);
  const servers = members.map(
    (m) =>
      `    server ${nginxAddress(m.host, m.port)} max_fails=2 fail_timeout=${BALANCER_FAIL_TIMEOUT}s; # ${m.label.replace(/[\r\n]/g, ' ')}`,
  );
  return `# Managed by metalship: the app hosts behind this load balancer.
upstream ${name} {
${servers.join('\n')}
}
map $http_upgrade $metalship_${name}_connection {
    default upgrade;
    '' close;
}
`;
}

/**
 * Takes an app host out of the balancers' rotation, or puts it back, without
 * touching the balancers: while draining, the host answers new connections to
 * the port they reach it on with a TCP reset (loopback aside, so its own checks
 * still work). A balancer gets "connection refused" before it has sent anything
 * and passes the request, whatever its method, to the next host; requests in
 * flight finish. Reloading the balancer instead would close its clients' idle
 * keep-alive connections, which some clients see as errors. The rule is not
 * persistent: a reboot clears a drain a killed run left behind.
 */
export function drainStep(layout: Layout, port: number, draining: boolean): Step<void> {
  const rule = sh`INPUT ! -i lo -p tcp --dport ${String(port)} --syn -m comment --comment ${'metalship-drain-' + layout.app} -j REJECT --reject-with tcp-reset`;
  return plainStep(
    draining ? 'taking the host out of rotation' : 'putting the host back in rotation',
    script(
      'tools=""',
      'for t in iptables ip6tables; do command -v "$t" >/dev/null 2>&1 && tools="$tools $t"; done',
      `[ -n "$tools" ] || { echo "draining needs iptables (provision installs it with ufw)" >&2; exit 1; }`,
      'for t in $tools; do',
      draining
        ? `  "$t" -w -C ${rule} 2>/dev/null || "$t" -w -I ${rule.replace(/^INPUT /, 'INPUT 1 ')}`
        : `  while "$t" -w -D ${rule} 2>/dev/null; do :; done`,
      'done',
      draining ? 'echo DRAINING' : 'echo IN_ROTATION',
    ),
  );
}
