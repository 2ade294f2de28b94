// PostgreSQL: the app's role and database, pg_hba rules for local access (and
// SSL-only remote access for the app hosts when this is the db host, and for
// networks given), and the daily backups of the backup module (pg_dump -Fc plus
// a manifest, kept for a number of days). An app host whose database is on a db
// host gets the client alone (the pre-migration backup's pg_dump).

import { backupInstallScript, backupProgram, backupProgramPath, backupUnitNames } from '../backup.js';
import { isIP } from 'node:net';
import { hbaAddress, hbaName } from '../quoting.js';
import { quote, sh } from '../sh.js';
import { itemScript, type Item } from './common.js';
import { inUseLines, passwordHash, unreadNote } from './in-use.js';
import {
  postgresqlCaPath,
  serviceCaLines,
  serviceTlsFiles,
  serviceTlsLines,
  serviceTlsStep,
  type ServiceTls,
} from './service-tls.js';
import type { ProvisionSettings } from './settings.js';
import type { Step } from '../step.js';

/**
 * The db host's TLS certificate and key (see service-tls.ts), which PostgreSQL
 * serves the app hosts with instead of Debian's snakeoil one: the app hosts
 * trust it alone (sslmode=verify-full), so a machine in the middle on the
 * private network cannot stand in for the database.
 */
export const POSTGRESQL_TLS_FILES = serviceTlsFiles('PostgreSQL', 'postgresql');

/** The db host's certificate, made before the items (see serviceTlsStep). */
export function postgresqlTlsStep(
  address: string,
  check: boolean,
  replace = true,
  app = '',
): Step<ServiceTls> {
  // Other apps on this db host (their pg_hba blocks, read as the postgres account) trust its CA too.
  const others = [
    `hba=$(cd / && ${PSQL} -c 'show hba_file' 2>/dev/null || true)`,
    sh`others=$(if [ -n "$hba" ]; then runuser -u postgres -- cat -- "$hba" 2>/dev/null | sed -n 's/^# BEGIN metalship //p' | grep -vxF -- ${app} | sort -u | paste -sd ' '; fi || true)`,
  ].join('\n');
  return serviceTlsStep(POSTGRESQL_TLS_FILES, address, check, replace, others);
}

/** Who may connect over the network (SSL only): each app host's address, when this is the db host, and db-remote-cidrs. */
function remoteNetworks(settings: ProvisionSettings): string[] {
  const hosts = settings.serves.db
    ? settings.topology.appAddresses.map((a) => (isIP(a) === 6 ? `${a}/128` : `${a}/32`))
    : [];
  return [...hosts, ...settings.postgresql.remoteCidrs];
}

/**
 * listen_addresses: every address for db-remote-cidrs (as before), the private
 * address and loopback on a db host, loopback alone (the packaged default) otherwise.
 */
function listenAddresses(settings: ProvisionSettings): string | null {
  if (settings.postgresql.remoteCidrs.length) return '*';
  if (settings.serves.db && settings.topology.db) return `localhost,${settings.topology.db.address}`;
  return null;
}

export function postgresqlClientItem(settings: ProvisionSettings): Item {
  const path = postgresqlCaPath(settings.layout.app);
  const where = settings.topology.db!.label;
  return {
    name: 'postgresql',
    script: itemScript(
      settings.check,
      sh`echo ${`note on ${where} (roles=db), over TLS: DATABASE_URL=postgresql://…?sslmode=verify-full&sslrootcert=${path}`}`,
      // Any client the distribution has will do (the server's packages bring one along).
      'if ! command -v pg_dump >/dev/null; then ms_install postgresql-client; fi',
      // The db host's certificate, the one root DATABASE_URL trusts.
      serviceCaLines(POSTGRESQL_TLS_FILES, path, where, settings.postgresql.tls),
    ),
  };
}

/** The app's roles pg_hba lets in: the owner, the login role and, while rotating, the previous one. */
function appRoles(settings: ProvisionSettings): string[] {
  const pg = settings.postgresql;
  return [...new Set([pg.user, pg.loginUser, pg.previousUser].filter(Boolean))];
}

export function hbaBlock(settings: ProvisionSettings): string {
  const pg = settings.postgresql;
  const db = hbaName(pg.database);
  return [
    `# BEGIN metalship ${settings.layout.app}`,
    ...appRoles(settings).flatMap((role) => {
      const user = hbaName(role);
      return [
        `host    ${db} ${user} 127.0.0.1/32 scram-sha-256`,
        `host    ${db} ${user} ::1/128 scram-sha-256`,
        ...remoteNetworks(settings).map((c) => `hostssl ${db} ${user} ${hbaAddress(c)} scram-sha-256`),
      ];
    }),
    `# END metalship ${settings.layout.app}`,
  ].join('\n');
}

/**
 * The comments that mark the roles provision manages the passwords of, naming
 * the app: a rotation takes passwords away only from this app's roles, and a
 * second app naming one of them is refused.
 */
export function loginRoleMarker(app: string, owner: string): string {
  return `metalship login role of app ${app} for ${owner}`;
}
export function ownerRoleMarker(app: string): string {
  return `metalship owner role of app ${app}`;
}

/**
 * The owner is a plain role: the app (and a login role acting as it) must
 * never hold a superuser's or a role maker's powers, whatever role db-user names.
 */
function plainOwnerCheck(): string {
  return [
    `priv=$(echo "select string_agg(p, ', ') from pg_roles, unnest(array[case when rolsuper then 'superuser' end, case when rolcreaterole then 'createrole' end, case when rolreplication then 'replication' end, case when rolbypassrls then 'bypassrls' end]) p where rolname = :'u'" | q)`,
    'if [ -n "$priv" ]; then',
    '  echo "db-user $u is a privileged role ($priv): the app\'s owner must be a plain role, so choose another db-user. Nothing was changed." >&2',
    '  exit 1',
    'fi',
  ].join('\n');
}

/**
 * Decides, before any change, what happens to the passwords of the app's roles:
 * the login role's is set when db-password does not log in yet, the previous
 * role's is kept, every other app role's is removed. Refuses when a serving
 * unit would fail its next connection, or when a role named is not the app's.
 * Leaves setpw (1 or 0) and remove (an array of role names) for the changes.
 */
function passwordDecision(settings: ProvisionSettings): string {
  const pg = settings.postgresql;
  const other = pg.loginUser === pg.user ? `${pg.user}_b` : pg.user;
  const unread = unreadNote(settings.elsewhere);
  return [
    // The password is right when it logs in; it goes to psql on stdin, never on a command line.
    'pgpass=$(mktemp); chmod 600 "$pgpass"; trap \'rm -f "$pgpass"\' EXIT',
    sh`printf '%s\\n' ${'127.0.0.1:*:' + pg.database + ':' + pg.loginUser + ':' + pg.password.replace(/\\/g, '\\\\').replace(/:/g, '\\:')} > "$pgpass"`,
    'setpw=0',
    sh`if ! PGPASSFILE="$pgpass" psql -XAtq -w -h 127.0.0.1 -U ${pg.loginUser} -d ${pg.database} -c 'select 1' >/dev/null 2>&1; then setpw=1; fi`,
    // One line per role named or marked for the app: name, has a password, whose it is
    // (this app's owner or login role, another app's, or nobody's).
    `roles=$(echo "select rolname || ' ' || (rolpassword is not null) || ' ' || case when d = :'marker' then 'login' when d = :'owner_marker' then 'owner' when d is null then 'none' else coalesce('app:' || substring(d from '^metalship (?:owner|login) role of app (\\S+)'), 'other') end from pg_authid, shobj_description(oid, 'pg_authid') d where rolname in (:'u', :'l', :'p') or d = :'marker'" | q)`,
    unread ? 'remove=(); previous_pw=0; login_pw=0' : 'remove=(); previous_pw=0',
    'while read -r name haspw whose; do',
    '  [ -n "$name" ] || continue',
    '  if [ "$name" = "$u" ]; then input="db-user"; elif [ "$name" = "$l" ]; then input="db-login-user"; else input="db-previous-user"; fi',
    // Two apps on one role would each take the other's passwords away on a rotation.
    '  if [[ "$whose" == app:* ]]; then',
    "    echo \"Input '$input' names role $name, whose passwords provision manages for the app ${whose#app:}: two apps sharing a role would take each other's passwords away, so choose another $input for $app. Nothing was changed.\" >&2",
    '    exit 1',
    '  fi',
    '  if [ "$name" != "$u" ] && [ "$whose" != login ]; then',
    // Else provision could grant the owner to, and set a password on, a role it did not make.
    '    echo "Input \'$input\' names role $name, which exists and is not a login role of $app: choose another name. Nothing was changed." >&2',
    '    exit 1',
    '  fi',
    '  if [ "$name" = "$u" ]; then owner_whose=$whose; fi',
    '  if [ "$name" = "$p" ] && [ "$haspw" = true ]; then previous_pw=1; fi',
    unread ? '  if [ "$name" = "$l" ] && [ "$haspw" = true ]; then login_pw=1; fi' : null,
    '  if [ "$haspw" = true ] && [ "$name" != "$l" ] && [ "$name" != "$p" ]; then remove+=("$name"); fi',
    'done <<<"$roles"',
    'if [ -n "$p" ]; then',
    '  if [ "$previous_pw" = 1 ]; then ms_warn "rotation under way: $p still accepted"; else ms_warn "db-previous-user $p has no password: nothing logs in with it"; fi',
    'fi',
    // A running service that logs in with a password this run changes or removes would fail its next connection.
    unread
      ? [
          // Adding a password to a role without one takes nothing away; changing or removing one may.
          'if { [ "$setpw" = 1 ] && [ "$login_pw" = 1 ]; } || [ "${#remove[@]}" != 0 ]; then',
          sh`  echo ${unread + ': changing or removing a password they may log in with needs them in the run. Nothing was changed.'} >&2`,
          '  exit 1',
          'fi',
        ].join('\n')
      : null,
    // The app hosts' logins come with the hash of db-password or `-`: no other password's hash reaches this host.
    inUseLines(settings, 'DATABASE_URL', (h) => (h === passwordHash(pg.password) ? h : '-')),
    'while read -r var user hash unit; do',
    '  [ "$var" = DATABASE_URL ] || continue',
    sh`  if [ "$setpw" = 1 ] && [ "$user" = "$l" ] && [ "$hash" != ${passwordHash(pg.password)} ]; then`,
    sh`    echo "$unit logs in to PostgreSQL as $l with another password: changing it would fail its next connection. Rotate with no failed request: provision with db-login-user: ${other}, the new db-password, db-previous-user: $l and the new DATABASE_URL (user ${other}) in env; deploy; provision again without db-previous-user. Nothing was changed." >&2`,
    '    exit 1',
    '  fi',
    '  for r in "${remove[@]}"; do',
    '    if [ "$user" = "$r" ]; then',
    '      echo "$unit logs in to PostgreSQL as $r, whose password this run takes away (db-previous-user is not $r): it would fail its next connection. Deploy the app with DATABASE_URL as $l first, or keep db-previous-user: $r. Nothing was changed." >&2',
    '      exit 1',
    '    fi',
    '  done',
    'done < <(in_use)',
  ]
    .filter((l) => l !== null)
    .join('\n');
}

/** The login role, when it is not the owner: a member of the owner whose sessions start as the owner. */
function loginRoleScript(): string {
  return [
    `if [ -z "$(echo "select 1 from pg_roles where rolname = :'l'" | q)" ]; then`,
    '  ms_changed "login role $l created"',
    `  if [ "$CHECK" != 1 ]; then echo 'create role :"l" login inherit nosuperuser nocreatedb nocreaterole noreplication nobypassrls password null' | q; fi`,
    'fi',
    `if [ -z "$(echo "select 1 from pg_roles where rolname = :'l' and shobj_description(oid, 'pg_authid') = :'marker'" | q)" ]; then`,
    '  ms_changed "role $l marked as a login role of $u"',
    sh`  if [ "$CHECK" != 1 ]; then echo ${`comment on role :"l" is :'marker'`} | q; fi`,
    'fi',
    `if [ -z "$(echo "select 1 from pg_auth_members m join pg_roles g on g.oid = m.roleid join pg_roles r on r.oid = m.member where g.rolname = :'u' and r.rolname = :'l'" | q)" ]; then`,
    '  ms_changed "role $l made a member of $u"',
    `  if [ "$CHECK" != 1 ]; then echo 'grant :"u" to :"l"' | q; fi`,
    'fi',
    // Role-wide (not IN DATABASE): pg_dumpall --globals-only keeps it with the membership.
    `if [ -z "$(echo "select 1 from pg_db_role_setting s join pg_roles r on r.oid = s.setrole where r.rolname = :'l' and s.setdatabase = 0 and 'role=' || :'u' = any(s.setconfig)" | q)" ]; then`,
    '  ms_changed "sessions of $l start as $u (SET ROLE)"',
    sh`  if [ "$CHECK" != 1 ]; then echo ${`alter role :"l" set role = :'u'`} | q; fi`,
    'fi',
  ].join('\n');
}

/** Sets the login role's password when it does not log in yet, and removes the passwords decided on. */
function passwordChanges(settings: ProvisionSettings): string {
  const pg = settings.postgresql;
  return [
    'if [ "$setpw" = 1 ]; then',
    '  ms_changed "password of role $l set"',
    // printf is a builtin: the password is never on a command line. Stored as
    // SCRAM whatever the server's default (md5 before PostgreSQL 14): the
    // app's pg_hba rules accept only scram-sha-256.
    sh`  if [ "$CHECK" != 1 ]; then printf '%s\\n' ${"set password_encryption = 'scram-sha-256';"} ${`alter role :"l" password '${pg.password.replace(/'/g, "''")}'`} | q; fi`,
    'fi',
    'for r in "${remove[@]}"; do',
    // The role keeps LOGIN: the app user's peer login over the socket still works.
    '  ms_changed "password of role $r removed"',
    `  if [ "$CHECK" != 1 ]; then echo 'alter role :"r" password null' | q -v r="$r"; fi`,
    // Authentication happens at connection start only: open sessions live on.
    `  read -r n from <<<"$(echo "select count(*) || ' ' || coalesce(string_agg(distinct coalesce(host(client_addr), 'local'), ','), '') from pg_stat_activity where usename = :'r'" | q -v r="$r")"`,
    '  if [ "${n:-0}" != 0 ]; then ms_warn "$n sessions are still connected as $r (from $from): they keep working, but a new connection as $r fails from now on"; fi',
    'done',
    // ALTER OWNER takes ACCESS EXCLUSIVE locks under load: named, not done.
    `drift=$(echo "select count(*) from pg_class where relowner in (select oid from pg_roles where shobj_description(oid, 'pg_authid') = :'marker')" | q -d "$db" 2>/dev/null || true)`,
    'if [ "${drift:-0}" != 0 ]; then ms_warn "$drift objects are owned by a login role, not $u (a session left SET ROLE): run REASSIGN OWNED BY <role> TO $u"; fi',
  ].join('\n');
}

const PSQL = 'runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1';

/**
 * Remote clients: listen_addresses (a restart) and SSL on; on a db host with
 * the certificate of POSTGRESQL_TLS_FILES (a reload: PostgreSQL reloads its SSL
 * files on SIGHUP since 10, and keeps the old ones if the new fail to load).
 * Addresses it listens on stay: another app on this host may be reached at one
 * of them ('*', all of them, stays '*').
 */
function pgServerSsl(listen: string, own: boolean): string {
  const want = own
    ? [
        ['ssl', 'on'],
        ['ssl_cert_file', POSTGRESQL_TLS_FILES.cert],
        ['ssl_key_file', POSTGRESQL_TLS_FILES.key],
      ]
    : // Debian's cluster has the snakeoil certificate of ssl-cert configured.
      [['ssl', 'on']];
  const differs = want.map(
    ([name, value]) => `[ "$(${PSQL} -c ${quote('show ' + name!)})" != ${quote(value!)} ]`,
  );
  return [
    `listen_now=$(${PSQL} -c 'show listen_addresses'); listen_now=\${listen_now// /}`,
    'listen_want=$listen_now',
    `listen_add=(${listen
      .split(',')
      .map((a) => quote(a))
      .join(' ')})`,
    'for a in "${listen_add[@]}"; do',
    '  case ",$listen_want," in *",*,"*|*",$a,"*) ;; *) if [ "$a" = "*" ]; then listen_want="*"; else listen_want="${listen_want:+$listen_want,}$a"; fi;; esac',
    'done',
    'pg_restart=0',
    'if [ "$listen_now" != "$listen_want" ]; then pg_restart=1; fi',
    `if [ "$pg_restart" = 1 ] || ${differs.join(' || ')}${own ? ' || [ "$tls_made" = 1 ]' : ''}; then`,
    // The addresses it will listen on: those it had are kept.
    `  ms_changed "listening on $listen_want for remote clients, SSL on${own ? " with this host's own certificate" : ''}"`,
    '  if [ "$CHECK" != 1 ]; then',
    `    { printf '%s\n' "alter system set listen_addresses = :'listen_want';"; printf '%s\n' ${want.map(([name, value]) => quote(`alter system set ${name} = '${value}';`)).join(' ')}; } | q -v listen_want="$listen_want"`,
    sh`    if [ "$pg_restart" = 1 ]; then systemctl restart postgresql; else echo 'select pg_reload_conf()' | q >/dev/null; fi`,
    '  fi',
    'fi',
  ].join('\n');
}

/**
 * The item's variables, `q` (psql as postgres with them) and every refusal,
 * read-only: the item runs them first, and the run's pre-check on every host
 * before any item changes anything (see Item.precheck).
 */
function decisionLines(settings: ProvisionSettings): string[] {
  const pg = settings.postgresql;
  const app = settings.layout.app;
  return [
    sh`u=${pg.user} l=${pg.loginUser} p=${pg.previousUser} db=${pg.database} app=${app} marker=${loginRoleMarker(app, pg.user)} owner_marker=${ownerRoleMarker(app)}`,
    `# shellcheck disable=SC2120 # arguments are optional: most calls feed it stdin only\nq() { ${PSQL} -v u="$u" -v l="$l" -v p="$p" -v db="$db" -v marker="$marker" -v owner_marker="$owner_marker" "$@"; }`,
    plainOwnerCheck(),
    pg.password ? passwordDecision(settings) : '',
  ];
}

/** The owner is marked as this app's (when it carries no comment): another app naming it is then refused. */
function ownerClaimScript(): string {
  return [
    'if [ "${owner_whose:-none}" = none ]; then',
    '  ms_changed "role $u marked as the owner role of $app"',
    sh`  if [ "$CHECK" != 1 ]; then echo ${`comment on role :"u" is :'owner_marker'`} | q; fi`,
    'fi',
  ].join('\n');
}

export function postgresqlItem(settings: ProvisionSettings): Item {
  const pg = settings.postgresql;
  const backup = {
    app: settings.layout.app,
    database: pg.database,
    backupDir: pg.backupDir,
    retentionDays: pg.keepDays,
  };
  const units = backupUnitNames(settings.layout.app);
  const psql = PSQL;
  const listen = listenAddresses(settings);
  // A db host serves its own certificate; db-remote-cidrs alone keeps the cluster's (snakeoil on Debian).
  const own = settings.serves.db && !!settings.topology.db;
  return {
    name: 'postgresql',
    // Nothing to refuse where PostgreSQL is not installed: no role exists yet. One
    // installed but stopped has roles the run could only judge after starting it.
    precheck: [
      `if ${PSQL} -c 'select 1' >/dev/null 2>&1; then`,
      ...decisionLines(settings),
      'elif command -v pg_lsclusters >/dev/null 2>&1 && clusters=$(pg_lsclusters -h 2>/dev/null) && [ -n "$clusters" ]; then',
      String.raw`  echo "PostgreSQL is installed on this host but does not answer ($(head -n 3 <<< "$clusters" | tr '\n' ';')). Its roles decide what provision may change, so start it first ($(awk '$4 != "online" { printf "%sunmask and start postgresql@%s-%s.service, or pg_ctlcluster %s %s start", sep, $1, $2, $1, $2; sep = "; " }' <<< "$clusters")) and run provision again. Nothing was changed." >&2`,
      '  exit 1',
      'fi',
    ].join('\n'),
    script: itemScript(
      settings.check,
      'ms_install postgresql',
      'if ! systemctl is-active --quiet postgresql; then ms_changed "postgresql started"; ms_apply systemctl enable --now --quiet postgresql; fi',
      // Clusters take a moment to accept connections after a start.
      `for _ in $(seq 1 30); do ${psql} -c 'select 1' >/dev/null 2>&1 && break; sleep 1; done`,
      // Every refusal is decided before the first change.
      ...decisionLines(settings),
      sh`if [ -z "$(echo "select 1 from pg_roles where rolname = :'u'" | q)" ]; then ms_changed ${'role ' + pg.user + ' created'}; if [ "$CHECK" != 1 ]; then echo 'create role :"u" login' | q; fi; fi`,
      sh`if [ -z "$(echo "select 1 from pg_database where datname = :'db'" | q)" ]; then ms_changed ${'database ' + pg.database + ' created'}; if [ "$CHECK" != 1 ]; then echo 'create database :"db" owner :"u"' | q; fi; fi`,
      pg.password ? ownerClaimScript() : null,
      pg.password && pg.loginUser !== pg.user ? loginRoleScript() : null,
      pg.password ? passwordChanges(settings) : null,
      `hba=$(${psql} -c 'show hba_file')`,
      sh`block=$(cat <<'MS_HBA_EOF'`,
      hbaBlock(settings),
      'MS_HBA_EOF',
      ')',
      // Our rules first (pg_hba: the first matching line wins), the rest as it was;
      // rules already there stay where they are (another app's block may be above: runs of each app then agree).
      // The file, its directory and the hba_file setting are the postgres account's: root
      // reads and writes none of them, the account does (links there lead only where it may go).
      'hba_now=$(runuser -u postgres -- cat -- "$hba")',
      sh`if grep -qxF -- ${'# BEGIN metalship ' + settings.layout.app} <<< "$hba_now"; then new=$(BLOCK="$block" awk -v b=${'# BEGIN metalship ' + settings.layout.app} -v e=${'# END metalship ' + settings.layout.app} '$0 == b { if (!done) print ENVIRON["BLOCK"]; done = 1; skip = 1; next } $0 == e { skip = 0; next } !skip' <<< "$hba_now"); else new=$(printf '%s\\n' "$block" "$hba_now"); fi`,
      'if [ "$new" != "$hba_now" ]; then',
      '  ms_changed "pg_hba rules for the app"',
      '  # shellcheck disable=SC2016 # the inner script expands its own arguments',
      String.raw`  if [ "$CHECK" != 1 ]; then printf '%s\n' "$new" | runuser -u postgres -- bash -c 'umask 077; t=$(mktemp "$1.metalship-XXXXXX") && cat > "$t" && chmod --reference="$1" "$t" && mv -f "$t" "$1"' _ "$hba"; echo "select pg_reload_conf()" | q >/dev/null; fi`,
      'fi',
      // The cluster's settings are readable by the server's account only (the
      // packages leave postgresql.conf, start.conf and pg_ctl.conf world-readable;
      // lynis 3.1+ warns of it as DBS-1828).
      `conf_dir=$(dirname "$(${psql} -c 'show config_file')")`,
      // Regular files only, changed by the account that owns them (never root through a link).
      'open_confs=$(runuser -u postgres -- find "$conf_dir" -maxdepth 1 -type f -name "*.conf" -perm /o=rwx -printf "%f " | sed "s/ $//")',
      'if [ -n "$open_confs" ]; then ms_changed "PostgreSQL configuration files no longer world-readable: $open_confs"; ms_apply runuser -u postgres -- find "$conf_dir" -maxdepth 1 -type f -name "*.conf" -perm /o=rwx -exec chmod o-rwx {} +; fi',
      own
        ? serviceTlsLines(
            POSTGRESQL_TLS_FILES,
            'postgres',
            pg.tls,
            `-starttls postgres -connect "127.0.0.1:$(${PSQL} -c 'show port')"`,
          )
        : null,
      listen ? pgServerSsl(listen, own) : null,
      'if [ "$CHECK" = 1 ]; then',
      sh`  prog=$(mktemp); cat > "$prog" <<'MS_PROG_EOF'`,
      backupProgram(backup).replace(/\n$/, ''),
      'MS_PROG_EOF',
      sh`  if ! cmp -s "$prog" ${backupProgramPath(settings.layout.app)}; then ms_changed "backup program differs or is missing"; fi; rm -f "$prog"`,
      sh`  if ! systemctl is-enabled --quiet ${units.timer} 2>/dev/null; then ms_changed ${'backup timer ' + units.timer + ' not enabled'}; fi`,
      'else',
      backupInstallScript({ ...backup, onCalendar: pg.schedule }),
      'fi',
    ),
  };
}
