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
import { inUseFunction, passwordHash } from './in-use.js';
import type { ProvisionSettings } from './settings.js';

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
  // Any client the distribution has will do (the server's packages bring one along).
  return {
    name: 'postgresql',
    script: itemScript(
      settings.check,
      'if ! command -v pg_dump >/dev/null; then ms_install postgresql-client; fi',
    ),
  };
}

export function hbaBlock(settings: ProvisionSettings): string {
  const pg = settings.postgresql;
  const db = hbaName(pg.database);
  const user = hbaName(pg.user);
  return [
    `# BEGIN metalship ${settings.layout.app}`,
    `host    ${db} ${user} 127.0.0.1/32 scram-sha-256`,
    `host    ${db} ${user} ::1/128 scram-sha-256`,
    ...remoteNetworks(settings).map((c) => `hostssl ${db} ${user} ${hbaAddress(c)} scram-sha-256`),
    `# END metalship ${settings.layout.app}`,
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
  const psql = 'runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1';
  const listen = listenAddresses(settings);
  return {
    name: 'postgresql',
    script: itemScript(
      settings.check,
      'ms_install postgresql',
      'if ! systemctl is-active --quiet postgresql; then ms_changed "postgresql started"; ms_apply systemctl enable --now --quiet postgresql; fi',
      // Clusters take a moment to accept connections after a start.
      `for _ in $(seq 1 30); do ${psql} -c 'select 1' >/dev/null 2>&1 && break; sleep 1; done`,
      `# shellcheck disable=SC2120 # arguments are optional: most calls feed it stdin only\nq() { ${psql} -v u=${pg.user} -v db=${pg.database} "$@"; }`,
      sh`if [ -z "$(echo "select 1 from pg_roles where rolname = :'u'" | q)" ]; then ms_changed ${'role ' + pg.user + ' created'}; if [ "$CHECK" != 1 ]; then echo 'create role :"u" login' | q; fi; fi`,
      sh`if [ -z "$(echo "select 1 from pg_database where datname = :'db'" | q)" ]; then ms_changed ${'database ' + pg.database + ' created'}; if [ "$CHECK" != 1 ]; then echo 'create database :"db" owner :"u"' | q; fi; fi`,
      pg.password
        ? [
            // The password is right when it logs in; it goes to psql on stdin, never on a command line.
            'pgpass=$(mktemp); chmod 600 "$pgpass"; trap \'rm -f "$pgpass"\' EXIT',
            sh`printf '%s\\n' ${'127.0.0.1:*:' + pg.database + ':' + pg.user + ':' + pg.password.replace(/\\/g, '\\\\').replace(/:/g, '\\:')} > "$pgpass"`,
            sh`if ! PGPASSFILE="$pgpass" psql -XAtq -w -h 127.0.0.1 -U ${pg.user} -d ${pg.database} -c 'select 1' >/dev/null 2>&1; then`,
            // A running service that logs in with the old password would fail its next connection.
            inUseFunction(settings.layout, settings.user),
            '  while read -r var user hash unit; do',
            sh`    if [ "$var" = DATABASE_URL ] && [ "$user" = ${encodeURIComponent(pg.user)} ] && [ "$hash" != ${passwordHash(pg.password)} ]; then`,
            sh`      echo "$unit logs in to PostgreSQL as ${pg.user} with another password: changing it now would fail its next connection. PostgreSQL keeps one password per role, so no moment accepts both: stop the app's services (systemctl stop ${settings.layout.units.target}), provision, then deploy with the new DATABASE_URL; or use peer authentication (db-password empty), which has no password to rotate. Nothing was changed." >&2`,
            '      exit 1',
            '    fi',
            '  done < <(in_use)',
            sh`  ms_changed ${'password of role ' + pg.user + ' set'}`,
            // printf is a builtin: the password is never on a command line. Stored as
            // SCRAM whatever the server's default (md5 before PostgreSQL 14): the
            // app's pg_hba rules accept only scram-sha-256.
            sh`  if [ "$CHECK" != 1 ]; then printf '%s\\n' ${"set password_encryption = 'scram-sha-256';"} ${`alter role :"u" password '${pg.password.replace(/'/g, "''")}'`} | q; fi`,
            'fi',
          ].join('\n')
        : null,
      `hba=$(${psql} -c 'show hba_file')`,
      sh`block=$(cat <<'MS_HBA_EOF'`,
      hbaBlock(settings),
      'MS_HBA_EOF',
      ')',
      // Our rules first (pg_hba: the first matching line wins); the rest as it was.
      sh`new=$( { printf '%s\\n' "$block"; awk -v b=${'# BEGIN metalship ' + settings.layout.app} -v e=${'# END metalship ' + settings.layout.app} '$0 == b { skip = 1; next } $0 == e { skip = 0; next } !skip' "$hba"; } )`,
      'if [ "$new" != "$(cat "$hba")" ]; then',
      '  ms_changed "pg_hba rules for the app"',
      '  if [ "$CHECK" != 1 ]; then printf "%s\\n" "$new" > "$hba.metalship-new"; chown --reference="$hba" "$hba.metalship-new"; chmod --reference="$hba" "$hba.metalship-new"; mv -f "$hba.metalship-new" "$hba"; echo "select pg_reload_conf()" | q >/dev/null; fi',
      'fi',
      // The cluster's settings are readable by the server's account only (the
      // packages leave postgresql.conf, start.conf and pg_ctl.conf world-readable;
      // lynis 3.1+ warns of it as DBS-1828).
      `conf_dir=$(dirname "$(${psql} -c 'show config_file')")`,
      'open_confs=$(find "$conf_dir" -maxdepth 1 -name "*.conf" -perm /o=rwx -printf "%f " | sed "s/ $//")',
      'if [ -n "$open_confs" ]; then ms_changed "PostgreSQL configuration files no longer world-readable: $open_confs"; ms_apply find "$conf_dir" -maxdepth 1 -name "*.conf" -perm /o=rwx -exec chmod o-rwx {} +; fi',
      listen
        ? [
            `if [ "$(${psql} -c 'show listen_addresses')" != ${quote(listen)} ] || [ "$(${psql} -c 'show ssl')" != on ]; then`,
            sh`  ms_changed ${'listening on ' + listen + ' for remote clients, SSL on'}`,
            // ssl: Debian's cluster has the snakeoil certificate of ssl-cert configured.
            sh`  if [ "$CHECK" != 1 ]; then printf '%s\\n' ${`alter system set listen_addresses = '${listen}';`} 'alter system set ssl = on;' | q; systemctl restart postgresql; fi`,
            'fi',
          ].join('\n')
        : null,
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
