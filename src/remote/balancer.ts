// An nginx load balancer in front of the app hosts (provision, roles=lb): its
// upstream lists them (their nginx, port 80 by default). A rolling switch never
// takes a host out of rotation: each host's switch drops no request by itself.

import type { Layout } from './layout.js';
import { nginxAddress } from './quoting.js';

export interface BalancerMember {
  /** As written in the hosts input, for the comment beside it. */
  label: string;
  host: string;
  port: number;
}

/** Seconds a balancer leaves an app host alone after it failed twice (nginx's fail_timeout). */
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
