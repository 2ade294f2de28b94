// nginx configuration for an app: the upstream (which api slot serves) and the
// site. The deploy path owns the upstream; the site is provision's, with a
// minimal HTTP site installed by the deploy when none exists yet.

import type { Layout } from './layout.js';
import { nginxServerNames, nginxWord } from './quoting.js';

export function upstreamName(l: Layout): string {
  return `${l.app.replace(/-/g, '_')}_api`;
}

/**
 * http-level config: the upstream and the WebSocket map. The upstream is a link
 * to the serving slot's socket; nginx opens the path for every upstream
 * connection, so a switch renames the link and never reloads nginx (a reload
 * closes clients' idle keep-alive connections, which some clients see as errors).
 */
export function upstreamConf(layout: Layout): string {
  return `# Managed by metalship.
upstream ${upstreamName(layout)} {
    server ${nginxWord(`unix:${layout.apiLink}`)} max_fails=0;
}
map $http_upgrade $metalship_${upstreamName(layout)}_connection {
    default upgrade;
    '' close;
}
`;
}

export interface SiteSettings {
  /** Names separated by white space (the server-name input's form), or _ for any. */
  serverName: string;
  /** null: HTTP only. */
  tls: { certificate: string; key: string } | null;
  staticDir?: string;
  /** Serve ACME http-01 challenges from this directory on port 80 (HTTP-only sites; TLS sites always do). */
  acmeWebroot?: string;
  /** The upstream to proxy to: the app's own (default), or a load balancer's. */
  upstream?: string;
  /**
   * How the TLS server turns HTTP/2 on: the `listen ... http2` flag (what nginx
   * before 1.25.1 knows, and the default) or the `http2 on;` directive that
   * replaced it (the flag is deprecated from 1.25.1 on).
   */
  http2?: 'listen' | 'directive';
  /** The site's own access and error logs go here (provision's site); none: nginx's defaults. */
  logDir?: string;
}

export const ACME_WEBROOT = '/var/www/letsencrypt';

function proxyLocation(upstream: string, balancer: boolean): string {
  // A balancer passes a request to the next app host when one refuses the
  // connection (any method: nothing was sent yet) and, for idempotent
  // requests, when one times out or answers 502/503/504.
  const retry = balancer ? `\n        proxy_next_upstream error timeout http_502 http_503 http_504;` : '';
  // A host that is down is passed over quickly (the LAN answers in microseconds).
  const connectTimeout = balancer ? '2s' : '5s';
  return `    location / {
        proxy_pass ${nginxWord(`http://${upstream}`)};
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $metalship_${upstream}_connection;
        proxy_connect_timeout ${connectTimeout};
        proxy_read_timeout 60s;
        proxy_send_timeout 60s;${retry}
    }`;
}

const securityHeaders = `    add_header X-Content-Type-Options nosniff always;
    add_header X-Frame-Options SAMEORIGIN always;
    add_header Referrer-Policy strict-origin-when-cross-origin always;`;

export function siteConf(layout: Layout, settings: SiteSettings): string {
  const isDefault = settings.serverName === '_';
  const listen = (port: number, extra = '') =>
    `    listen ${port}${extra}${isDefault ? ' default_server' : ''};\n    listen [::]:${port}${extra}${isDefault ? ' default_server' : ''};`;
  const statics = settings.staticDir
    ? // A link is followed only to a file of its own owner: a link the app plants
      // in its files never serves, say, a world-readable system file.
      `    location /static/ {\n        alias ${nginxWord(`${settings.staticDir}/`)};\n        disable_symlinks if_not_owner;\n        expires 7d;\n        access_log off;\n    }\n`
    : '';
  const logs = settings.logDir
    ? `    access_log ${nginxWord(`${settings.logDir}/access.log`)};\n    error_log ${nginxWord(`${settings.logDir}/error.log`)};\n`
    : '';
  const serverName = `    server_name ${nginxServerNames(settings.serverName)};\n${logs}`.trimEnd();
  const common = `${serverName}
    client_max_body_size 25m;
    client_body_timeout 30s;
    client_header_timeout 30s;
    send_timeout 60s;
    keepalive_timeout 65s;
    server_tokens off;
${securityHeaders}
${statics}${proxyLocation(settings.upstream ?? upstreamName(layout), settings.upstream !== undefined)}`;
  const acme = (root: string) => `    location /.well-known/acme-challenge/ {
        root ${nginxWord(root)};
    }`;
  if (!settings.tls) {
    return `# Managed by metalship (HTTP only: no domain configured).
server {
${listen(80)}
${settings.acmeWebroot ? acme(settings.acmeWebroot) + '\n' : ''}${common}
}
`;
  }
  return `# Managed by metalship.
server {
${listen(80)}
${serverName}
    server_tokens off;
${acme(settings.acmeWebroot ?? ACME_WEBROOT)}
    location / {
        return 301 https://$host$request_uri;
    }
}
server {
${settings.http2 === 'directive' ? `${listen(443, ' ssl')}\n    http2 on;` : listen(443, ' ssl http2')}
    ssl_certificate ${nginxWord(settings.tls.certificate)};
    ssl_certificate_key ${nginxWord(settings.tls.key)};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:metalship_ssl:10m;
    add_header Strict-Transport-Security "max-age=31536000" always;
${common}
}
`;
}
