// Redis: loopback only, the default user off, an ACL user for the app that may
// not run dangerous commands (ACLs, not the deprecated rename-command),
// maxmemory (given, or a share of RAM) with allkeys-lru, appendonly. The syntax
// follows the version found on the host (see RedisSyntax). On a redis host
// (roles=redis) it listens on loopback and the private address too, over TLS
// only: a certificate of its own, which the app hosts trust alone (see redisTlsStep).

import { bareWord } from '../quoting.js';
import { quote, raw, script, sh, textVar } from '../sh.js';
import type { Step } from '../step.js';
import { ensureEtcDir, ETC_DIR, itemScript, type Item } from './common.js';
import {
  serviceCaLines,
  serviceTlsFiles,
  serviceTlsLines,
  serviceTlsStep,
  type ServiceTls,
} from './service-tls.js';
import { inUseLines, passwordHash, unreadNote } from './in-use.js';
import type { ProvisionSettings } from './settings.js';

export const REDIS_CONF = '/etc/redis/redis.conf';
export const REDIS_DROPIN = '/etc/redis/metalship.conf';
export const REDIS_ACL = '/etc/redis/users.acl';
/**
 * metalship's own Redis user: with it provision loads an ACL change (ACL LOAD)
 * instead of restarting Redis, which would fail every client's next request.
 * Its password is made on the host and stays there, root's (600, in a
 * directory only root can write: /etc/redis is the redis user's).
 */
export const REDIS_ADMIN = 'metalship-admin';
export const REDIS_ADMIN_SECRET = `${ETC_DIR}/redis-admin.secret`;
/** The app whose users the ACL file holds: one app per Redis server (root's, 644). */
export const REDIS_APP = `${ETC_DIR}/redis-app`;

/**
 * Refuses, before anything is written, an app other than the one whose users
 * the ACL file holds: the file is written whole, so provisioning a second app
 * would take the first app's Redis user away.
 */
function oneAppPerRedis(app: string): string {
  return script(
    sh`redis_app=$(cat ${REDIS_APP} 2>/dev/null || true)`,
    sh`if [ -n "$redis_app" ] && [ "$redis_app" != ${app} ]; then`,
    sh`  echo "Redis on this host serves the app $redis_app"${`: its ACL file holds that app's users, and provisioning ${app} would replace them. Give ${app} a Redis server of its own (a roles=redis host), or set redis: false and point its REDIS_URL at the one it has. Nothing was changed.`} >&2`,
    '  exit 1',
    'fi',
  ).trimEnd();
}

/** Records the app whose users the ACL file holds, when none is (see oneAppPerRedis). */
function recordRedisApp(app: string): string {
  return sh`if [ -z "$redis_app" ] && [ "$CHECK" != 1 ]; then printf '%s\n' ${app} > ${REDIS_APP}.new && mv -f ${REDIS_APP}.new ${REDIS_APP}; fi`;
}

/**
 * The redis host's TLS certificate and key (see service-tls.ts). Redis reads
 * the key through its group (set by the redis item, once the package has made that group).
 */
export const REDIS_TLS_FILES = serviceTlsFiles('Redis', 'redis');

/** On an app host: the redis host's certificate, the one CA its REDIS_URL trusts (`?ssl_ca_certs=`). */
export function redisCaPath(app: string): string {
  return `${ETC_DIR}/${app}-redis-ca.pem`;
}

/** The redis host's certificate, made before the items (see serviceTlsStep). */
export function redisTlsStep(address: string, check: boolean, replace = true): Step<ServiceTls> {
  return serviceTlsStep(REDIS_TLS_FILES, address, check, replace);
}

/** On an app host whose Redis is on a redis host: that host's certificate in redisCaPath, the CA of its REDIS_URL. */
export function redisCaItem(settings: ProvisionSettings): Item {
  const path = redisCaPath(settings.layout.app);
  const where = settings.topology.redis!.label;
  return {
    name: 'redis',
    script: itemScript(
      settings.check,
      sh`echo ${`note on ${where} (roles=redis), over TLS: REDIS_URL=rediss://…?ssl_ca_certs=${path}`}`,
      serviceCaLines(REDIS_TLS_FILES, path, where, settings.redis.tls),
    ),
  };
}

/**
 * Which syntax a Redis takes. ACL users need 6.0. 6.2 added Pub/Sub channel
 * rules (`&*`, `resetchannels`; 6.0 refuses them, and lets every user use every
 * channel) and optional bind addresses (`-::1`; 6.0 refuses the `-`, and skips
 * an address the host lacks by itself). 7.0 made `resetchannels` the default,
 * so from 6.2 on the app's user is given its channels.
 */
export type RedisSyntax = '6.0' | '6.2';

/**
 * The ACL file: passwords only as SHA-256, never in clear on disk. During a
 * rotation the user has two (Redis accepts any of a user's passwords).
 */
export function aclFile(user: string, passwords: string[], syntax: RedisSyntax = '6.2'): string {
  // A second `user default` line would be the default user again, on: Redis refuses the file.
  if (user === 'default') throw new Error("redis-user cannot be 'default': that user is turned off");
  if (user === REDIS_ADMIN)
    throw new Error(`redis-user cannot be '${REDIS_ADMIN}': that user is metalship's`);
  const hashes = [...new Set(passwords.filter(Boolean).map(passwordHash))].map((h) => `#${h}`).join(' ');
  const channels = syntax === '6.2';
  return `user default off${channels ? ' resetchannels' : ''} -@all
user ${bareWord(user, 'the Redis ACL file')} on ${hashes} ~*${channels ? ' &*' : ''} +@all -@dangerous
`;
}

/**
 * Refuses, before anything is written, a change that would take away the Redis
 * password the app's running services log in with (one the ACL accepts now).
 */
function keepsPasswordsInUse(settings: ProvisionSettings): string {
  const accepted = [settings.redis.password, settings.redis.previousPassword]
    .filter(Boolean)
    .map(passwordHash);
  const unread = unreadNote(settings.elsewhere);
  return [
    sh`accepted=${` ${accepted.join(' ')} `}`,
    unread
      ? [
          // A password the ACL accepts now and would not after: some unread service may use it.
          'while read -r hash; do',
          '  if [ -n "$hash" ] && [[ "$accepted" != *" $hash "* ]]; then',
          sh`    echo ${unread + ': changing or removing a Redis password they may log in with needs them in the run. Nothing was changed.'} >&2`,
          '    exit 1',
          '  fi',
          sh`done < <(awk -v u=${settings.redis.user} '$1 == "user" && $2 == u { for (i = 3; i <= NF; i++) if ($i ~ /^#/) print substr($i, 2) }' < <(runuser -u redis -- cat ${REDIS_ACL} 2>/dev/null))`,
        ].join('\n')
      : null,
    // The app hosts' hashes as they are: the ACL file holds the SHA-256 of each password Redis accepts.
    inUseLines(settings, 'REDIS_URL', (h) => h),
    'while read -r var user hash unit; do',
    sh`  if [ "$var" != REDIS_URL ] || { [ "$user" = ${settings.redis.user} ] && [[ "$accepted" == *" $hash "* ]]; }; then continue; fi`,
    // Refused only when Redis accepts that login now: a login already failing is not this change's doing.
    sh`  if awk -v u="$user" -v h="#$hash" '$1 == "user" && $2 == u { for (i = 3; i <= NF; i++) if ($i == h) f = 1 } END { exit !f }' < <(runuser -u redis -- cat ${REDIS_ACL} 2>/dev/null); then`,
    sh`    echo "$unit logs in to Redis as $user with a password this change would take away (REDIS_URL): it would fail on its next connection. Rotate without a failed request: provision with the new redis-password and the old one as redis-previous-password, deploy the app with the new REDIS_URL, then provision again without redis-previous-password. Nothing was changed." >&2`,
    '    exit 1',
    '  fi',
    'done < <(in_use)',
  ]
    .filter((l) => l !== null)
    .join('\n');
}

/** Loopback, IPv6 where the host has it; and the private address on the redis host (not optional: it must listen there). */
export function redisBind(syntax: RedisSyntax, own: string | null = null): string {
  return `${syntax === '6.2' ? '127.0.0.1 -::1' : '127.0.0.1 ::1'}${own ? ` ${own}` : ''}`;
}

/**
 * Sets redis_syntax from the installed redis-server, or stops the item before
 * anything is written when provision does not know how to configure it.
 */
export const REDIS_VERSION_LINES = [
  "redis_version=$(redis-server --version 2>/dev/null | sed -n 's/.* v=\\([0-9][0-9]*\\.[0-9][0-9.]*\\) .*/\\1/p')",
  'if [ -z "$redis_version" ] || dpkg --compare-versions "$redis_version" lt 6.0; then',
  '  echo "redis-server ${redis_version:-of unknown version (redis-server --version says: $(redis-server --version 2>&1 | head -c 200))} is not supported: provision needs Redis 6.0 or newer (ACL users); nothing was changed" >&2; exit 1',
  'fi',
  'if dpkg --compare-versions "$redis_version" lt 6.2; then redis_syntax=6.0; else redis_syntax=6.2; fi',
].join('\n');

/** On a redis host: TLS on the Redis port, nothing in plain; clients are not asked for certificates (they log in with the ACL password). */
const TLS_SETTINGS = [
  'port 0',
  'tls-port 6379',
  `tls-cert-file ${REDIS_TLS_FILES.cert}`,
  `tls-key-file ${REDIS_TLS_FILES.key}`,
  // Redis 6.0 wants a CA even when it asks clients for no certificate.
  `tls-ca-cert-file ${REDIS_TLS_FILES.cert}`,
  'tls-auth-clients no',
  'tls-protocols "TLSv1.2 TLSv1.3"',
];

/**
 * The redis host's certificate, as redisTlsStep made it: Redis reads the key
 * through its group; a new certificate restarts it. A build without TLS is
 * refused before anything is written.
 */
function redisTlsLines(tls: ServiceTls | null): string {
  return [
    // Read whole, not piped to grep -q: under pipefail, ldd killed by SIGPIPE would read as no TLS.
    'case "$(ldd "$(command -v redis-server)" 2>/dev/null)" in *libssl*) ;; *)',
    '  echo "redis-server $redis_version was built without TLS: a redis host (roles=redis) serves the app hosts over TLS only. Nothing was changed." >&2; exit 1;;',
    'esac',
    serviceTlsLines(REDIS_TLS_FILES, 'redis', tls, '-connect 127.0.0.1:6379'),
    sh`redis_ca=${REDIS_TLS_FILES.ca}; if [ ! -s "$redis_ca" ]; then redis_ca=${REDIS_TLS_FILES.cert}; fi`,
    'if [ "$tls_made" = 1 ]; then restart=1; fi',
  ].join('\n');
}

export function redisItem(settings: ProvisionSettings): Item {
  const redis = settings.redis;
  const maxmemory = redis.maxmemory
    ? quote(redis.maxmemory)
    : `$(awk '/^MemTotal:/ { printf "%d", $2 * 1024 * ${redis.memoryPercent} / 100 }' /proc/meminfo)`;
  const tls = settings.serves.redis;
  // metalship's own checks: over TLS where Redis serves nothing else (trusting its certificate alone).
  // The CA that signs its certificate (a host set up before there was one: that self-signed certificate).
  const cli = `redis-cli -h 127.0.0.1${tls ? ' --tls --cacert "$redis_ca"' : ''}`;
  return {
    name: 'redis',
    // Before Redis is installed, only another app's claim on it refuses: no password is accepted yet.
    precheck: [
      oneAppPerRedis(settings.layout.app),
      'if command -v redis-server >/dev/null; then',
      REDIS_VERSION_LINES,
      keepsPasswordsInUse(settings),
      'fi',
    ].join('\n'),
    script: itemScript(
      settings.check,
      oneAppPerRedis(settings.layout.app),
      'ms_install redis-server',
      REDIS_VERSION_LINES,
      keepsPasswordsInUse(settings),
      'restart=0',
      'acl_changed=0',
      tls ? redisTlsLines(settings.redis.tls ?? null) : null,
      ensureEtcDir(),
      recordRedisApp(settings.layout.app),
      sh`if [ ! -s ${REDIS_ADMIN_SECRET} ] && [ "$CHECK" != 1 ]; then (umask 077 && head -c 32 /dev/urandom | base64 -w0 > ${REDIS_ADMIN_SECRET + '.new'}) && mv -f ${REDIS_ADMIN_SECRET + '.new'} ${REDIS_ADMIN_SECRET}; fi`,
      sh`admin_hash=$(if [ -s ${REDIS_ADMIN_SECRET} ]; then sha256sum < ${REDIS_ADMIN_SECRET} | cut -d ' ' -f 1; fi)`,
      ...(['6.0', '6.2'] as const).map((syntax) =>
        [
          sh`if [ "$redis_syntax" = ${syntax} ]; then`,
          textVar('acl', aclFile(redis.user, [redis.password, redis.previousPassword], syntax)),
          sh`  ms_file ${REDIS_ACL} 640 redis:redis ${'Redis ACL users'} < <(printf '%s\n' "$acl"; if [ -n "$admin_hash" ]; then printf 'user %s on #%s ~*%s +@all\n' ${REDIS_ADMIN} "$admin_hash" ${syntax === '6.2' ? ' &*' : ''}; fi)`,
          '  if [ "$MS_WROTE" = 1 ]; then acl_changed=1; fi',
          sh`  redis_bind=${redisBind(syntax, settings.serves.redis ? (settings.topology.redis?.address ?? null) : null)}`,
          'fi',
        ].join('\n'),
      ),
      `maxmemory=${maxmemory}`,
      sh`ms_file ${REDIS_DROPIN} 640 redis:redis ${'Redis settings'} < <(printf '%s\\n' '# Managed by metalship.' "bind $redis_bind" 'protected-mode yes' ${tls ? TLS_SETTINGS : ['port 6379']} "maxmemory $maxmemory" 'maxmemory-policy allkeys-lru' 'appendonly yes' ${'aclfile ' + REDIS_ACL})`,
      'if [ "$MS_WROTE" = 1 ]; then restart=1; fi',
      // Included last, so its values override the packaged file's.
      // /etc/redis is the redis account's: it reads and edits redis.conf there, never root (a link there would lead root anywhere).
      sh`if [ "$(runuser -u redis -- grep -v '^[[:space:]]*\\(#\\|$\\)' ${REDIS_CONF} | tail -n 1)" != ${'include ' + REDIS_DROPIN} ]; then`,
      sh`  ms_changed "Redis includes the metalship settings last"`,
      '  # shellcheck disable=SC2016 # the inner script expands its own arguments',
      sh`  if [ "$CHECK" != 1 ]; then runuser -u redis -- bash -c 'sed -i "\\#^$2\\$#d" "$1" && printf "\\n%s\\n" "$2" >> "$1"' _ ${REDIS_CONF} ${'include ' + REDIS_DROPIN}; restart=1; fi`,
      'fi',
      'if [ "$CHECK" != 1 ]; then',
      '  if [ "$restart" = 1 ] || ! systemctl is-active --quiet redis-server; then systemctl enable --quiet redis-server; systemctl restart redis-server;',
      // Only the users changed: loaded in place, no client loses its connection (a restart only when Redis does not know our user yet).
      sh`  elif [ "$acl_changed" = 1 ] && [ "$(REDISCLI_AUTH=$(cat ${REDIS_ADMIN_SECRET}) ${raw(cli)} --no-auth-warning --user ${REDIS_ADMIN} ACL LOAD 2>&1)" != OK ]; then systemctl restart redis-server; fi`,
      // The app's user must work, and nobody else may run anything.
      `  for _ in $(seq 1 20); do ${cli} ping >/dev/null 2>&1 && break; sleep 0.5; done`,
      sh`  if [ "$(REDISCLI_AUTH=${redis.password} ${raw(cli)} --no-auth-warning --user ${redis.user} ping 2>&1)" != PONG ]; then echo "the app's Redis user cannot log in after the change" >&2; exit 1; fi`,
      `  case "$(${cli} ping 2>&1)" in *NOAUTH*|*NOPERM*|*WRONGPASS*|*"authentication"*) ;; *) echo "Redis still answers unauthenticated clients" >&2; exit 1;; esac`,
      'fi',
    ),
  };
}
