// The TLS a redis or db host serves its app hosts with over the private
// network: a CA of the host's own (its key never leaves the host and no service
// reads it) and a server certificate it signs, for the host's private
// addresses and loopback. The app hosts trust that CA alone; provision gives
// them a copy in the same run. No public CA names a private address, and a
// certificate any CA could issue would be trusted for more than this host.
// Because the app hosts trust the CA, not the server certificate, renewing the
// server certificate (expiry, another address) needs nothing of them: no app
// host, of this app or another one sharing the host, loses its connections.

import { raw, script, sh, textVar } from '../sh.js';
import { step, type Step } from '../step.js';
import { ensureEtcDir, ETC_DIR } from './common.js';

/** What a service's certificates are called, and where they live on its host (root's directory). */
export interface ServiceTlsFiles {
  /** As the messages name it: "Redis", "PostgreSQL". */
  service: string;
  dir: string;
  /** The CA the app hosts trust, and its key (root's alone). */
  ca: string;
  caKey: string;
  /** The server certificate and key the service reads (through its group). */
  cert: string;
  key: string;
}

export function serviceTlsFiles(service: string, name: string): ServiceTlsFiles {
  const dir = `${ETC_DIR}/${name}-tls`;
  return {
    service,
    dir,
    ca: `${dir}/ca.pem`,
    caKey: `${dir}/ca.key`,
    cert: `${dir}/cert.pem`,
    key: `${dir}/key.pem`,
  };
}

/**
 * On an app host: the db host's CA, the one root its DATABASE_URL trusts
 * (`sslrootcert=`). Here, not in postgresql.ts, so that the input checks
 * read it without the backup programs that module bundles.
 */
export function postgresqlCaPath(app: string): string {
  return `${ETC_DIR}/${app}-postgresql-ca.pem`;
}

/**
 * What the runner read on the service's host, for the app hosts: the
 * certificate they trust (the CA; on a host set up before there was one and
 * left as it was, its self-signed server certificate); made: this run made a
 * server certificate; stale: the CA needs replacing, which waits for every app
 * host; renew (check mode): the server certificate would be made anew.
 */
export interface ServiceTls {
  certificate: string | null;
  made: boolean;
  stale?: boolean;
  renew?: boolean;
  /** With stale: the other apps using the CA, which keep it from being replaced. */
  shared?: string;
}

/** The server certificate is made anew when it expires within this many days (the alert warns before, at alert-certificate-days). */
const SERVICE_TLS_RENEW_DAYS = 30;
const SERVER_VALID_DAYS = 3650;
const CA_VALID_DAYS = 7300;

/**
 * On the service's host, before the items (the app hosts need its CA in the
 * same run). Not in check mode: makes the CA when missing or expiring within
 * SERVICE_TLS_RENEW_DAYS, and the server certificate when missing, expiring,
 * not for this address or not signed by the CA (keeping the addresses it had:
 * another app may reach the host at one of them). A CA in use, or the
 * self-signed certificate of before, is replaced only when every app host is
 * in the run (replace): one left out would keep trusting the old one alone.
 * Prints the certificate the app hosts trust.
 */
export function serviceTlsStep(
  files: ServiceTlsFiles,
  address: string,
  check: boolean,
  replace = true,
  /** Shell lines that set `$others` to the other apps using this host's CA (their hosts are not in this run). */
  others = 'others=',
): Step<ServiceTls> {
  const renew = String(SERVICE_TLS_RENEW_DAYS * 86400);
  const ec = raw('-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes');
  // A CA in use is replaced only with every app host of every app using it in the run.
  const replacing = raw(`{ ${replace ? 'true' : 'false'} && [ -z "$others" ]; }`);
  return step(
    `the ${files.service} TLS certificate`,
    script(
      sh`ca_valid() { [ -s ${files.caKey} ] && [ -s ${files.ca} ] && openssl x509 -noout -checkend ${renew} -in ${files.ca} >/dev/null 2>&1; }`,
      // Valid: not expiring, for this address, signed by the CA, and its key is the one beside it.
      sh`server_valid() { [ -s ${files.key} ] && [ -s ${files.cert} ] && openssl x509 -noout -checkend ${renew} -in ${files.cert} >/dev/null 2>&1 && [[ "$(openssl x509 -noout -checkip ${address} -in ${files.cert} 2>/dev/null)" == *'does match'* ]] && openssl verify -CAfile ${files.ca} ${files.cert} >/dev/null 2>&1 && [ "$(openssl x509 -noout -pubkey -in ${files.cert} 2>/dev/null)" = "$(openssl pkey -pubout -in ${files.key} 2>/dev/null)" ]; }`,
      others,
      check
        ? script(
            sh`if ! ca_valid && { ${replacing} || [ ! -s ${files.cert} ]; }; then echo RENEW; elif ca_valid && ! server_valid; then echo RENEW; fi`,
          )
        : script(
            sh`if ! command -v openssl >/dev/null; then echo ${`openssl is missing: the ${files.service} TLS certificate is made with it (apt-get install openssl)`} >&2; exit 1; fi`,
            sh`if [ ! -d ${ETC_DIR} ]; then install -d -m 755 -o root -g root ${ETC_DIR}; fi`,
            sh`if [ ! -d ${files.dir} ]; then install -d -m 750 -o root -g root ${files.dir}; fi`,
            // No CA (a host set up before there was one: its server certificate is what the app hosts trust) or one expiring.
            sh`if ! ca_valid && { ${replacing} || [ ! -s ${files.cert} ]; }; then`,
            // A configuration of its own: the distribution's adds extensions of its own (OpenSSL 1.1 then repeats basicConstraints, and the CA is refused).
            sh`  work=$(mktemp -d -p ${files.dir})`,
            `  printf '%s\\n' '[req]' 'distinguished_name = dn' 'x509_extensions = ca' '[dn]' '[ca]' 'basicConstraints = critical,CA:TRUE,pathlen:0' 'keyUsage = critical,keyCertSign,cRLSign' 'subjectKeyIdentifier = hash' > "$work/ca.cnf"`,
            sh`  (umask 077 && openssl req -config "$work/ca.cnf" -x509 ${ec} -days ${String(CA_VALID_DAYS)} -subj ${`/O=metalship ${files.service}/CN=metalship ${files.service} CA ${address}`} -keyout ${files.caKey + '.new'} -out ${files.ca + '.new'} 2>&1) >&2`,
            sh`  chmod 644 ${files.ca + '.new'}`,
            sh`  mv -f ${files.caKey + '.new'} ${files.caKey} && mv -f ${files.ca + '.new'} ${files.ca}`,
            '  rm -rf -- "$work"',
            'fi',
            'if ca_valid && ! server_valid; then',
            // The addresses it was for stay: another app may reach this host at one of them.
            sh`  sans=$({ if [ -s ${files.cert} ]; then openssl x509 -noout -ext subjectAltName -in ${files.cert} 2>/dev/null | grep -o 'IP Address:[0-9A-Fa-f.:]*' | cut -d : -f 2-; fi; echo ${address}; echo 127.0.0.1; } | sort -u | sed 's/^/IP:/' | paste -sd ,)`,
            sh`  work=$(mktemp -d -p ${files.dir})`,
            "  printf '%s\\n' \"subjectAltName=$sans\" 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' 'subjectKeyIdentifier=hash' 'authorityKeyIdentifier=keyid:always' > \"$work/ext\"",
            // CN is the address too: libpq before 14 matches the host against the CN alone when the SAN has no DNS name.
            sh`  (umask 077 && openssl req -new ${ec} -subj ${`/O=metalship ${files.service}/CN=${address}`} -keyout "$work/key.pem" -out "$work/csr.pem" 2>&1) >&2`,
            sh`  openssl x509 -req -in "$work/csr.pem" -CA ${files.ca} -CAkey ${files.caKey} -set_serial "0x$(openssl rand -hex 16)" -days ${String(SERVER_VALID_DAYS)} -extfile "$work/ext" -out "$work/cert.pem" 2>&1 >&2`,
            '  chmod 644 "$work/cert.pem"',
            // The key keeps the group the service reads it through (set by the service's item).
            sh`  if [ -e ${files.key} ]; then chown --reference=${files.key} "$work/key.pem"; chmod --reference=${files.key} "$work/key.pem"; fi`,
            sh`  mv -f "$work/key.pem" ${files.key} && mv -f "$work/cert.pem" ${files.cert}`,
            '  rm -rf -- "$work"',
            '  echo MADE',
            'fi',
          ),
      sh`if ! ca_valid && [ -s ${files.cert} ]; then echo STALE; if [ -n "$others" ]; then echo "SHARED $others"; fi; fi`,
      sh`if [ -s ${files.ca} ]; then cat ${files.ca}; elif [ -s ${files.cert} ]; then cat ${files.cert}; fi`,
    ),
    (stdout) => ({
      certificate:
        /-----BEGIN CERTIFICATE-----\n[\s\S]+?\n-----END CERTIFICATE-----\n/.exec(stdout)?.[0] ?? null,
      made: /^MADE$/m.test(stdout),
      stale: /^STALE$/m.test(stdout),
      shared: /^SHARED (.+)$/m.exec(stdout)?.[1] ?? '',
      renew: /^RENEW$/m.test(stdout),
    }),
  );
}

/**
 * On the service's host, in its item: the service reads the server key
 * through its group; the CA's key is root's alone. Missing files fail the item
 * (not in check mode). `$tls_made` is set for the item to reload or restart the
 * service when what it serves is not the server certificate on disk (read from
 * the service itself with `openssl s_client <probe>`): a run that made one and
 * was stopped before the reload is mended by the next.
 */
export function serviceTlsLines(
  files: ServiceTlsFiles,
  group: string,
  tls: ServiceTls | null,
  probe: string,
): string {
  return [
    sh`if [ "$CHECK" != 1 ] && { [ ! -s ${files.cert} ] || [ ! -s ${files.key} ]; }; then echo ${`the ${files.service} TLS certificate is missing from ${files.dir}`} >&2; exit 1; fi`,
    sh`if [ -d ${files.dir} ] && [ "$(stat -c %a:%U:%G ${files.dir} ${files.key} 2>/dev/null | tr '\n' ' ')" != ${`750:root:${group} 640:root:${group} `} ]; then ms_changed ${`${files.service} may read its TLS key`}; ms_apply chown ${'root:' + group} ${files.dir} ${files.key}; ms_apply chmod 750 ${files.dir}; ms_apply chmod 640 ${files.key}; fi`,
    sh`if [ -e ${files.caKey} ] && [ "$(stat -c %a:%U:%G ${files.caKey})" != 600:root:root ]; then ms_changed ${`the ${files.service} CA key is root's alone`}; ms_apply chown root:root ${files.caKey}; ms_apply chmod 600 ${files.caKey}; fi`,
    tls?.made ? 'ms_changed "TLS certificate made"' : null,
    tls?.renew ? 'ms_changed "TLS certificate made anew"' : null,
    'tls_made=0',
    `served=$(timeout 10 openssl s_client ${probe} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 2>/dev/null || true)`,
    sh`if [ -s ${files.cert} ] && [ "$served" != "$(openssl x509 -noout -fingerprint -sha256 -in ${files.cert})" ]; then ms_changed ${`${files.service} serves its current TLS certificate`}; tls_made=1; fi`,
    tls?.stale
      ? sh`ms_warn ${`the TLS CA expires within ${SERVICE_TLS_RENEW_DAYS} days, or this host still has the self-signed certificate of before: ${tls.shared ? `other apps use it too (${tls.shared}), whose app hosts would keep trusting the old one alone, so it is kept` : 'provision with every app host in the run to replace it (one left out would keep trusting the old one)'}`}`
      : null,
  ]
    .filter((l) => l !== null)
    .join('\n');
}

/**
 * On an app host whose service is on a host of its own: that host's CA at
 * `path`, the one its URL trusts. Unknown (the host is not in
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
          sh`ms_file ${path} 644 root:root ${`the CA of ${where} (${files.service} TLS)`} < <(printf '%s\\n' "$pem")`,
        ].join('\n')
      : sh`if [ ! -s ${path} ]; then ms_warn ${`the certificate of ${where} is unknown (not in this run, or made by its first run): provision with it to write ${path}`}; fi`,
  ].join('\n');
}
