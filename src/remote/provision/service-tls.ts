// The certificate a redis or db host serves its app hosts with over the private
// network: self-signed, for its private address and loopback, made on the host
// (the key never leaves it) and trusted alone by the app hosts, which provision
// gives a copy in the same run. No public CA names a private address, and a
// certificate any CA could issue would be trusted for more than this host.

import { script, sh, textVar } from '../sh.js';
import { step, type Step } from '../step.js';
import { ensureEtcDir, ETC_DIR } from './common.js';

/** What a service's certificate is called, and where it lives on its host (root's directory). */
export interface ServiceTlsFiles {
  /** As the messages name it: "Redis", "PostgreSQL". */
  service: string;
  dir: string;
  cert: string;
  key: string;
}

export function serviceTlsFiles(service: string, name: string): ServiceTlsFiles {
  const dir = `${ETC_DIR}/${name}-tls`;
  return { service, dir, cert: `${dir}/cert.pem`, key: `${dir}/key.pem` };
}

/**
 * On an app host: the db host's certificate, the one root its DATABASE_URL
 * trusts (`sslrootcert=`). Here, not in postgresql.ts, so that the input checks
 * read it without the backup programs that module bundles.
 */
export function postgresqlCaPath(app: string): string {
  return `${ETC_DIR}/${app}-postgresql-ca.pem`;
}

/**
 * The host's certificate as the runner read it, for the app hosts; made: this
 * run made it; stale: it needs replacing, which waits for every app host.
 */
export interface ServiceTls {
  certificate: string | null;
  made: boolean;
  stale?: boolean;
}

/** Made anew when it expires within this many days (the alert warns before, at alert-certificate-days). */
export const SERVICE_TLS_RENEW_DAYS = 30;
const SERVICE_TLS_VALID_DAYS = 3650;

/**
 * On the service's host, before the items (the app hosts need its certificate
 * in the same run): makes the certificate when missing, not for this address,
 * or expiring within SERVICE_TLS_RENEW_DAYS (not in check mode), and prints it.
 * One in use is replaced only when every app host is in the run (replace): one
 * left out would keep trusting the old one alone.
 */
export function serviceTlsStep(
  files: ServiceTlsFiles,
  address: string,
  check: boolean,
  replace = true,
): Step<ServiceTls> {
  const valid = [
    sh`[ -s ${files.key} ] && [ -s ${files.cert} ]`,
    sh`openssl x509 -noout -checkend ${SERVICE_TLS_RENEW_DAYS * 86400} -in ${files.cert} >/dev/null 2>&1`,
    sh`[[ "$(openssl x509 -noout -checkip ${address} -in ${files.cert} 2>/dev/null)" == *'does match'* ]]`,
  ].join(' && ');
  return step(
    `the ${files.service} TLS certificate`,
    script(
      check
        ? null
        : script(
            sh`if ! command -v openssl >/dev/null; then echo ${`openssl is missing: the ${files.service} TLS certificate is made with it (apt-get install openssl)`} >&2; exit 1; fi`,
            sh`if [ ! -d ${ETC_DIR} ]; then install -d -m 755 -o root -g root ${ETC_DIR}; fi`,
            sh`if [ ! -d ${files.dir} ]; then install -d -m 750 -o root -g root ${files.dir}; fi`,
            `if ! { ${valid}; }${replace ? '' : sh` && [ ! -s ${files.cert} ]`}; then`,
            // CN is the address too: libpq before 14 matches the host against the CN alone when the SAN has no DNS name.
            sh`  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days ${String(SERVICE_TLS_VALID_DAYS)} -subj ${`/O=metalship ${files.service}/CN=${address}`} -addext ${'subjectAltName=IP:' + address + ',IP:127.0.0.1'} -addext 'keyUsage=critical,digitalSignature,keyCertSign' -addext 'extendedKeyUsage=serverAuth' -keyout ${files.key + '.new'} -out ${files.cert + '.new'} 2>&1) >&2`,
            sh`  chmod 644 ${files.cert + '.new'}`,
            // The key keeps the group the service reads it through (set by the service's item).
            sh`  if [ -e ${files.key} ]; then chown --reference=${files.key} ${files.key + '.new'}; chmod --reference=${files.key} ${files.key + '.new'}; fi`,
            sh`  mv -f ${files.key + '.new'} ${files.key} && mv -f ${files.cert + '.new'} ${files.cert}`,
            '  echo MADE',
            'fi',
          ),
      `if [ -s ${files.cert} ] && ! { ${valid}; }; then echo STALE; fi`,
      sh`if [ -s ${files.cert} ]; then cat ${files.cert}; fi`,
    ),
    (stdout) => ({
      certificate:
        /-----BEGIN CERTIFICATE-----\n[\s\S]+?\n-----END CERTIFICATE-----\n/.exec(stdout)?.[0] ?? null,
      made: /^MADE$/m.test(stdout),
      stale: /^STALE$/m.test(stdout),
    }),
  );
}

/**
 * On the service's host, in its item: the service reads the key through its
 * group. Missing files fail the item (not in check mode); a new certificate
 * sets `$tls_made` for the item to reload or restart the service.
 */
export function serviceTlsLines(files: ServiceTlsFiles, group: string, tls: ServiceTls | null): string {
  return [
    sh`if [ "$CHECK" != 1 ] && { [ ! -s ${files.cert} ] || [ ! -s ${files.key} ]; }; then echo ${`the ${files.service} TLS certificate is missing from ${files.dir}`} >&2; exit 1; fi`,
    sh`if [ -d ${files.dir} ] && [ "$(stat -c %a:%U:%G ${files.dir} ${files.key} 2>/dev/null | tr '\\n' ' ')" != ${`750:root:${group} 640:root:${group} `} ]; then ms_changed ${`${files.service} may read its TLS key`}; ms_apply chown ${'root:' + group} ${files.dir} ${files.key}; ms_apply chmod 750 ${files.dir}; ms_apply chmod 640 ${files.key}; fi`,
    tls?.made ? 'ms_changed "TLS certificate made"; tls_made=1' : 'tls_made=0',
    tls?.stale
      ? sh`ms_warn ${`the TLS certificate expires within ${SERVICE_TLS_RENEW_DAYS} days or is not for this address: provision with every app host in the run to replace it (one left out would keep trusting the old one)`}`
      : null,
  ]
    .filter((l) => l !== null)
    .join('\n');
}

/**
 * On an app host whose service is on a host of its own: that host's
 * certificate at `path`, the one CA its URL trusts. Unknown (the host is not in
 * this run, or check mode before it has one): the file is left as it is.
 */
export function serviceCaLines(
  files: ServiceTlsFiles,
  path: string,
  where: string,
  tls: ServiceTls | null,
): string {
  return [
    ensureEtcDir(),
    tls?.certificate
      ? [
          textVar('pem', tls.certificate),
          sh`ms_file ${path} 644 root:root ${`the certificate of ${where} (${files.service} TLS)`} < <(printf '%s\\n' "$pem")`,
        ].join('\n')
      : sh`if [ ! -s ${path} ]; then ms_warn ${`the certificate of ${where} is unknown (not in this run, or made by its first run): provision with it to write ${path}`}; fi`,
  ].join('\n');
}
