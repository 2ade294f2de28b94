// TLS: a certificate for the domains from the ACME server (certbot, http-01 via
// nginx's webroot), renewed by certbot's systemd timer, nginx switched to the
// TLS site. With no domain the site stays HTTP only, and the report says so.

import { ACME_WEBROOT } from '../nginx.js';
import { unitEnv } from '../quoting.js';
import { raw, sh } from '../sh.js';
import { ensureEtcDir, ETC_DIR, file, itemScript, type Item } from './common.js';
import { certPaths, NGINX_RELOAD, siteLines } from './nginx.js';
import type { ProvisionSettings } from './settings.js';

export const ACME_CA_FILE = `${ETC_DIR}/acme-ca.pem`;
/** Where renewals run: certbot.service (the package) or the snap's own unit (Ubuntu). */
const CERTBOT_DROPINS = {
  package: '/etc/systemd/system/certbot.service.d/metalship.conf',
  snap: '/etc/systemd/system/snap.certbot.renew.service.d/metalship.conf',
};
const CA_DROPIN = `# Managed by metalship: renewals trust the ACME server's CA.\n[Service]\nEnvironment=${unitEnv('REQUESTS_CA_BUNDLE', ACME_CA_FILE)}\n`;

function caDropIn(path: string): string {
  const dir = path.replace(/\/[^/]+$/, '');
  return [
    sh`if [ ! -d ${dir} ]; then ms_apply mkdir -p ${dir}; fi`,
    file(path, CA_DROPIN, {
      label: 'certbot renewal CA',
      onChange: '[ "$CHECK" = 1 ] || systemctl daemon-reload',
    }),
  ].join('\n');
}

export function tlsItem(settings: ProvisionSettings): Item {
  const cert = certPaths(settings);
  const tls = settings.tls;
  if (!cert) {
    return {
      name: 'tls',
      script: itemScript(
        settings.check,
        'echo "note HTTP only: no domains given, so no certificate and no TLS"',
      ),
    };
  }
  const first = tls.domains[0]!;
  const want = [...tls.domains].sort().join(' ');
  const env = tls.caBundle ? sh`REQUESTS_CA_BUNDLE=${ACME_CA_FILE} ` : '';
  return {
    name: 'tls',
    script: itemScript(
      settings.check,
      // Ubuntu's recommended certbot is the snap: use it when it is there.
      'if ! command -v certbot >/dev/null 2>&1; then ms_install certbot; fi',
      'command -v nginx >/dev/null || { echo "nginx is not installed: TLS needs the nginx item" >&2; exit 1; }',
      tls.caBundle
        ? [
            ensureEtcDir(),
            file(ACME_CA_FILE, tls.caBundle, { label: 'ACME CA bundle' }),
            'if [ -x /snap/bin/certbot ]; then',
            caDropIn(CERTBOT_DROPINS.snap),
            'else',
            caDropIn(CERTBOT_DROPINS.package),
            'fi',
          ].join('\n')
        : null,
      sh`have=$(openssl x509 -in ${cert.certificate} -noout -ext subjectAltName 2>/dev/null | grep -o "DNS:[^,]*" | sed "s/DNS://" | sort | tr "\\n" " " | sed "s/ $//" || true)`,
      sh`server=$(sed -n "s/^server = //p" /etc/letsencrypt/renewal/${first}.conf 2>/dev/null || true)`,
      sh`if [ "$have" != ${want} ] || [ "$server" != ${tls.server} ]; then`,
      sh`  ms_changed ${'certificate for ' + tls.domains.join(', ') + ' from ' + tls.server}`,
      '  if [ "$CHECK" != 1 ]; then',
      // The HTTP site answers the challenge on port 80 (the nginx item wrote it).
      sh`    mkdir -p ${ACME_WEBROOT}`,
      sh`    if ! out=$(${raw(env)}certbot certonly --non-interactive --agree-tos --email ${tls.email} --server ${tls.server} --webroot -w ${ACME_WEBROOT} --cert-name ${first} ${tls.domains.flatMap((d) => ['-d', d])} --deploy-hook 'systemctl reload nginx' 2>&1); then`,
      '      echo "certbot failed: $(printf "%s" "$out" | tail -n 8)" >&2; exit 1',
      '    fi',
      '    got_cert=1',
      '  fi',
      'fi',
      // The nginx item wrote the TLS site already when the certificate existed; a new one needs it now.
      'nginx_changed=0',
      'if [ "${got_cert:-0}" = 1 ]; then',
      siteLines(settings),
      NGINX_RELOAD,
      'fi',
      // The snap renews through its own timer; the package through certbot.timer.
      'if [ -x /snap/bin/certbot ]; then renew_timer=snap.certbot.renew.timer; else renew_timer=certbot.timer; fi',
      'if ! systemctl is-enabled --quiet "$renew_timer" 2>/dev/null; then ms_changed "certbot renewal timer enabled"; ms_apply systemctl enable --now --quiet "$renew_timer"; fi',
      sh`if [ "$CHECK" != 1 ]; then echo ${'note certificate ' + cert.certificate}; fi`,
    ),
  };
}
