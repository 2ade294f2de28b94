// nginx: the standard's site for the app (from the same nginx module the deploy
// path uses), the upstream, the default site off; `nginx -t` before every
// reload. The site is the TLS one as soon as the certificate exists.

import { balancerUpstreamConf, balancerUpstreamName } from '../balancer.js';
import { ACME_WEBROOT, siteConf, upstreamConf } from '../nginx.js';
import { sh } from '../sh.js';
import { file, itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

export function certPaths(s: ProvisionSettings): { certificate: string; key: string } | null {
  const first = s.tls.domains[0];
  if (!first) return null;
  return {
    certificate: `/etc/letsencrypt/live/${first}/fullchain.pem`,
    key: `/etc/letsencrypt/live/${first}/privkey.pem`,
  };
}

/** Lines that write the site (TLS when its certificate exists), enable it and set nginx_changed. */
export function siteLines(s: ProvisionSettings): string {
  const l = s.layout;
  const cert = certPaths(s);
  const serverName = s.tls.domains.length ? s.tls.domains.join(' ') : '_';
  const base = s.balancer
    ? { serverName, acmeWebroot: ACME_WEBROOT, upstream: balancerUpstreamName(l) }
    : { serverName, staticDir: s.nginx.staticDir || undefined, acmeWebroot: ACME_WEBROOT };
  const http = file(l.nginxSite, siteConf(l, { ...base, tls: null }), {
    label: 'nginx site (HTTP only)',
    onChange: 'nginx_changed=1',
  });
  return [
    sh`if [ ! -d ${ACME_WEBROOT} ]; then ms_apply mkdir -p ${ACME_WEBROOT}; fi`,
    s.balancer
      ? file(l.balancerUpstream, balancerUpstreamConf(l, s.balancer), {
          label: 'load balancer upstream (the app hosts)',
          onChange: 'nginx_changed=1',
        })
      : file(l.nginxUpstream, upstreamConf(l), { label: 'nginx upstream', onChange: 'nginx_changed=1' }),
    cert
      ? [
          sh`if [ -f ${cert.certificate} ]; then`,
          file(l.nginxSite, siteConf(l, { ...base, tls: cert }), {
            label: 'nginx site (TLS)',
            onChange: 'nginx_changed=1',
          }),
          'else',
          http,
          'fi',
        ].join('\n')
      : http,
    sh`if [ "$(readlink ${l.nginxSiteEnabled} 2>/dev/null)" != ${l.nginxSite} ]; then ms_changed "nginx site enabled"; ms_apply ln -sfn ${l.nginxSite} ${l.nginxSiteEnabled}; nginx_changed=1; fi`,
    'if [ -e /etc/nginx/sites-enabled/default ]; then ms_changed "nginx default site disabled"; ms_apply rm -f /etc/nginx/sites-enabled/default; nginx_changed=1; fi',
  ].join('\n');
}

/** Tests the configuration, then reloads (or starts) nginx when something changed. */
export const NGINX_RELOAD = [
  'if [ "$CHECK" != 1 ]; then',
  '  if [ "$nginx_changed" = 1 ] || ! systemctl is-active --quiet nginx; then',
  '    if ! out=$(nginx -t 2>&1); then echo "nginx -t failed, nginx was not reloaded: $out" >&2; exit 1; fi',
  '    if systemctl is-active --quiet nginx; then systemctl reload nginx; else systemctl start nginx; ms_changed "nginx started"; fi',
  '  fi',
  '  if ! systemctl is-enabled --quiet nginx; then systemctl enable --quiet nginx; ms_changed "nginx enabled at boot"; fi',
  'fi',
].join('\n');

export function nginxItem(s: ProvisionSettings): Item {
  return {
    name: 'nginx',
    script: itemScript(s.check, 'ms_install nginx', 'nginx_changed=0', siteLines(s), NGINX_RELOAD),
  };
}
