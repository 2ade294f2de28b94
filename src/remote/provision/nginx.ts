// nginx: the standard's site for the app (from the same nginx module the deploy
// path uses), the upstream, the default site off; `nginx -t` before every
// reload. The site is the TLS one as soon as the certificate exists.

import { balancerUpstreamConf, balancerUpstreamName } from '../balancer.js';
import { ACME_WEBROOT, siteConf, upstreamConf } from '../nginx.js';
import { raw, sh } from '../sh.js';
import { file, itemScript, type Item } from './common.js';
import { nginxLogLines } from './logs.js';
import type { ProvisionSettings } from './settings.js';

export function certPaths(settings: ProvisionSettings): { certificate: string; key: string } | null {
  const first = settings.tls.domains[0];
  if (!first) return null;
  return {
    certificate: `/etc/letsencrypt/live/${first}/fullchain.pem`,
    key: `/etc/letsencrypt/live/${first}/privkey.pem`,
  };
}

/**
 * Sets nginx_http2 (see SiteSettings.http2) from the installed nginx, or stops
 * the item before anything is written when provision cannot tell its version.
 */
export const NGINX_VERSION_LINES = [
  "nginx_version=$(nginx -v 2>&1 | sed -n 's#^nginx version: [^/]*/\\([0-9][0-9]*\\.[0-9][0-9.]*\\).*#\\1#p')",
  'if [ -z "$nginx_version" ] || dpkg --compare-versions "$nginx_version" lt 1.9.5; then',
  '  echo "nginx ${nginx_version:-of unknown version (nginx -v says: $(nginx -v 2>&1 | head -c 200))} is not supported: the TLS site needs nginx 1.9.5 or newer (HTTP/2); nothing was changed" >&2; exit 1',
  'fi',
  'if dpkg --compare-versions "$nginx_version" lt 1.25.1; then nginx_http2=listen; else nginx_http2=directive; fi',
].join('\n');

/** The nginx files provision writes or removes for the app. */
function nginxFiles(settings: ProvisionSettings): string[] {
  const layout = settings.layout;
  return [
    layout.nginxSite,
    layout.nginxSiteEnabled,
    settings.balancer ? layout.balancerUpstream : layout.nginxUpstream,
    DEFAULT_SITE,
  ];
}

const DEFAULT_SITE = '/etc/nginx/sites-enabled/default';

/**
 * Saves the app's nginx files as they are, and defines ms_nginx_restore, which
 * puts them back: a configuration `nginx -t` refuses (NGINX_RELOAD) is undone,
 * so the next reload, by anyone, or a boot does not find nginx broken for every site.
 */
function snapshotLines(paths: string[]): string {
  const saved = (i: number) => raw(`"$ms_nginx_saved/${i}"`);
  return [
    'ms_nginx_saved=""',
    'if [ "$CHECK" != 1 ]; then',
    '  ms_nginx_saved=$(mktemp -d)',
    ...paths.map((p, i) => sh`  if [ -e ${p} ] || [ -L ${p} ]; then cp -a -- ${p} ${saved(i)}; fi`),
    'fi',
    // Called only on a failed nginx -t.
    '# shellcheck disable=SC2317',
    'ms_nginx_restore() {',
    ...paths.map(
      (p, i) =>
        sh`  rm -f -- ${p}; if [ -e ${saved(i)} ] || [ -L ${saved(i)} ]; then cp -a -- ${saved(i)} ${p}; fi`,
    ),
    '}',
  ].join('\n');
}

/** Lines that write the site (TLS when its certificate exists), enable it and set nginx_changed. */
export function siteLines(settings: ProvisionSettings): string {
  const layout = settings.layout;
  const cert = certPaths(settings);
  const serverName = settings.tls.domains.length ? settings.tls.domains.join(' ') : settings.nginx.serverName;
  const logDir = layout.nginxLogs;
  const base = settings.balancer
    ? { serverName, logDir, acmeWebroot: ACME_WEBROOT, upstream: balancerUpstreamName(layout) }
    : { serverName, logDir, staticDir: settings.nginx.staticDir || undefined, acmeWebroot: ACME_WEBROOT };
  const http = file(layout.nginxSite, siteConf(layout, { ...base, tls: null }), {
    label: 'nginx site (HTTP only)',
    onChange: 'nginx_changed=1',
  });
  return [
    cert ? NGINX_VERSION_LINES : null,
    snapshotLines(nginxFiles(settings)),
    sh`if [ ! -d ${ACME_WEBROOT} ]; then ms_apply mkdir -p ${ACME_WEBROOT}; fi`,
    // Before the site that names it: nginx -t opens the log files.
    nginxLogLines(layout),
    settings.balancer
      ? file(layout.balancerUpstream, balancerUpstreamConf(layout, settings.balancer), {
          label: 'load balancer upstream (the app hosts)',
          onChange: 'nginx_changed=1',
        })
      : file(layout.nginxUpstream, upstreamConf(layout), {
          label: 'nginx upstream',
          onChange: 'nginx_changed=1',
        }),
    cert
      ? [
          sh`if [ -f ${cert.certificate} ]; then`,
          ...(['listen', 'directive'] as const).flatMap((http2) => [
            sh`if [ "$nginx_http2" = ${http2} ]; then`,
            file(layout.nginxSite, siteConf(layout, { ...base, tls: cert, http2 }), {
              label: 'nginx site (TLS)',
              onChange: 'nginx_changed=1',
            }),
            'fi',
          ]),
          'else',
          http,
          'fi',
        ].join('\n')
      : http,
    sh`if [ "$(readlink ${layout.nginxSiteEnabled} 2>/dev/null)" != ${layout.nginxSite} ]; then ms_changed "nginx site enabled"; ms_apply ln -sfn ${layout.nginxSite} ${layout.nginxSiteEnabled}; nginx_changed=1; fi`,
    sh`if [ -e ${DEFAULT_SITE} ]; then ms_changed "nginx default site disabled"; ms_apply rm -f ${DEFAULT_SITE}; nginx_changed=1; fi`,
  ]
    .filter((line) => line !== null)
    .join('\n');
}

/** Tests the configuration, then reloads (or starts) nginx when something changed. */
export const NGINX_RELOAD = [
  'if [ "$CHECK" != 1 ]; then',
  '  if [ "$nginx_changed" = 1 ] || ! systemctl is-active --quiet nginx; then',
  '    if ! out=$(nginx -t 2>&1); then',
  '      if [ -n "${ms_nginx_saved:-}" ]; then ms_nginx_restore; rm -rf -- "$ms_nginx_saved"; echo "nginx -t refused the configuration: this app\'s nginx files are back as they were" >&2; fi',
  '      echo "nginx -t failed, nginx was not reloaded: $out" >&2; exit 1',
  '    fi',
  '    if systemctl is-active --quiet nginx; then systemctl reload nginx; else systemctl start nginx; ms_changed "nginx started"; fi',
  '  fi',
  '  if ! systemctl is-enabled --quiet nginx; then systemctl enable --quiet nginx; ms_changed "nginx enabled at boot"; fi',
  'fi',
  'if [ -n "${ms_nginx_saved:-}" ]; then rm -rf -- "$ms_nginx_saved"; fi',
].join('\n');

/**
 * Reads `nginx -T` (every file nginx loads, each after a "# configuration file
 * PATH:" line) and prints the files, other than the app's own site and Debian's
 * default one (provision removes it), with a `listen` on port 80 of every
 * address (`80`, `*:80`, `0.0.0.0:80`, `[::]:80`, or an address-less one) that
 * is a default server: statements split at ; { and }, whatever the lines.
 */
const DEFAULT_SERVERS_AWK = String.raw`
/^# configuration file .*:$/ { file = substr($0, 22, length($0) - 22); next }
{ sub(/#.*/, ""); text[file] = text[file] " " $0 }
END {
  for (f in text) {
    if (f == ours || f == oursEnabled || f == debian) continue
    n = split(text[f], statements, /[;{}]/)
    for (i = 1; i <= n; i++) {
      m = split(statements[i], w, /[ \t\r\n]+/)
      k = 1; while (k <= m && w[k] == "") k++
      if (w[k] != "listen") continue
      addr = w[k + 1]; isDefault = 0
      for (j = k + 2; j <= m; j++) if (w[j] == "default_server" || w[j] == "default") isDefault = 1
      if (!isDefault || addr ~ /^unix:/) continue
      if (addr ~ /^[0-9]+$/) { host = ""; port = addr }
      else if (addr ~ /:[0-9]+$/) { host = addr; sub(/:[0-9]+$/, "", host); port = addr; sub(/.*:/, "", port) }
      else { host = addr; port = 80 }
      if (port == 80 && (host == "" || host == "*" || host == "0.0.0.0" || host == "[::]")) { print f; break }
    }
  }
}`;

/**
 * An app without domains gets the default server (server_name _) on port 80.
 * Another site that already is one would make nginx refuse both: refused
 * before the run changes anything, naming that site. (When nginx refuses its
 * configuration already, there is nothing to read: the item's own nginx -t
 * stops it, and its files go back.)
 */
function defaultServerPrecheck(s: ProvisionSettings): string {
  return [
    sh`if config=$(nginx -T 2>/dev/null); then`,
    sh`  others=$(awk -v ours=${s.layout.nginxSite} -v oursEnabled=${s.layout.nginxSiteEnabled} -v debian=${DEFAULT_SITE} ${DEFAULT_SERVERS_AWK} <<< "$config" | sort -u | tr '\n' ' ')`,
    '  if [ -n "$others" ]; then',
    '    echo "nginx: another site already is the default server on port 80 (${others% }). This app has neither domains nor a server-name, so its site would be a second default server there and nginx would refuse the configuration for every site. Give the app its server-name (or domains, for TLS), or remove that site. Nothing was changed." >&2',
    '    exit 1',
    '  fi',
    'fi',
  ].join('\n');
}

export function nginxItem(s: ProvisionSettings): Item {
  const prechecks = [
    // An nginx already there that the TLS site cannot use is refused before the run changes anything.
    certPaths(s) ? NGINX_VERSION_LINES : null,
    s.tls.domains.length || s.nginx.serverName !== '_' ? null : defaultServerPrecheck(s),
  ].filter((p) => p !== null);
  return {
    name: 'nginx',
    precheck: prechecks.length
      ? ['if command -v nginx >/dev/null; then', ...prechecks, 'fi'].join('\n')
      : undefined,
    script: itemScript(s.check, 'ms_install nginx', 'nginx_changed=0', siteLines(s), NGINX_RELOAD),
  };
}
