// roles=db and roles=redis: the hosts input, the checks on it, and what
// provision plans for the db/redis host and for the app hosts beside it.
import { parseInputs } from '../../src/inputs/parse.js';
import { parseHosts, topology, topologyProblems, type HostSpec } from '../../src/inputs/hosts.js';
import { planItems } from '../../src/remote/provision/index.js';
import { firewallItem } from '../../src/remote/provision/firewall.js';
import { hbaBlock } from '../../src/remote/provision/postgresql.js';
import { resolveRoles } from '../../src/stages/hosts.js';
import { redisTlsStep } from '../../src/remote/provision/redis.js';
import { postgresqlTlsStep } from '../../src/remote/provision/postgresql.js';
import { base, POSTGRESQL_PEM, raw, REDIS_PEM, settings, topologyInputs } from '../support/provision.js';

const BOOKWORM = { os: 'Debian GNU/Linux 12 (bookworm)', id: 'debian', version: '12' };

function specs(text: string): HostSpec[] {
  const r = parseHosts(text);
  if (typeof r === 'string') throw new Error(r);
  return r;
}

test('private= and the db/redis roles parse; their host is no app host and takes none of the default roles', () => {
  const hosts = specs(
    'db1 roles=db,redis private=10.1.0.9\nweb1 private=10.1.0.5\nweb2 upstream=10.1.0.6:8080',
  );
  expect(hosts[0]).toMatchObject({ roles: ['db', 'redis'], private: '10.1.0.9' });
  const roles = resolveRoles(hosts);
  expect(roles[0]).toMatchObject({ api: false, worker: false, db: true, redis: true });
  // the first app host still takes the scheduler and the migrations
  expect(roles.slice(1).map((r) => [r.api, r.scheduler, r.migrate])).toEqual([
    [true, true, true],
    [true, false, false],
  ]);
  expect(topology(hosts)).toEqual({
    db: { label: 'db1', address: '10.1.0.9' },
    redis: { label: 'db1', address: '10.1.0.9' },
    backup: null,
    appAddresses: ['10.1.0.5', '10.1.0.6'],
  });
});

test.each([
  [
    'db1 roles=db,api',
    /runs no app role and no load balancer; expected roles=db, roles=redis or roles=db,redis/,
  ],
  ['db1 roles=redis,worker', /runs no app role/],
  ['lb1 roles=lb,db', /a load balancer \(roles=lb\) runs no app role; expected roles=lb alone/],
  [
    'db1 roles=db private=db.internal',
    /private= 'db.internal' is not an IP address \(expected e.g. private=10.0.0.5\)/,
  ],
])('%s is refused', (text, message) => {
  expect(parseHosts(text)).toMatch(message);
});

test('app hosts without an IP address on the private network, and two db hosts, are refused with what to write', () => {
  expect(topologyProblems(specs('db1 roles=db private=10.1.0.9\nweb1.example.com'))).toEqual([
    "Input 'hosts': 'web1.example.com' has no IP address on the private network ('web1.example.com' is a name); expected private=<address>, e.g. 'web1.example.com private=10.0.0.5' (the database and Redis hosts let app hosts in by address).",
  ]);
  expect(topologyProblems(specs('10.0.0.8 roles=db\n10.0.0.9 roles=db,redis\n10.0.0.5'))[0]).toMatch(
    /gives roles=db to 2 hosts \(10.0.0.8, 10.0.0.9\); expected at most one/,
  );
  // without a db or redis host, names are fine; a db host alone is fine
  expect(topologyProblems(specs('web1.example.com\nweb2.example.com'))).toEqual([]);
  expect(topologyProblems(specs('10.0.0.9 roles=db'))).toEqual([]);
});

test('a db host needs db-password (no peer authentication over the network)', () => {
  expect(() =>
    parseInputs('provision', raw({ ...base, ...topologyInputs(true), 'db-password': '' })),
  ).toThrow(/Input 'db-password' is required with a database host \(10.0.0.9 roles=db\)/);
});

test('the db/redis host: PostgreSQL and Redis for the app hosts alone, no app and no site', () => {
  const s = settings(topologyInputs(true));
  expect(s.serves).toEqual({ db: true, redis: true, backup: false });
  const plan = Object.fromEntries(planItems(s, BOOKWORM).map((p) => [p.name, p]));
  for (const name of ['python', 'app', 'logs', 'monitoring'] as const)
    expect(plan[name]).toMatchObject({ item: null, off: 'roles=db,redis: no app here' });
  expect(plan.nginx).toMatchObject({ item: null, off: 'roles=db,redis: no site here' });
  // Listening on the private address too, keeping any address it listens on already (another app's).
  const pgItem = plan.postgresql!.item!.script;
  expect(pgItem).toContain('listen_add=(localhost 10.1.0.9)');
  expect(pgItem).toContain(`alter system set listen_addresses = :'listen_want';`);
  // PostgreSQL serves the certificate made before the items, not Debian's snakeoil; it is reloaded
  // whenever what it serves (read over TLS from it) is not that certificate.
  expect(pgItem).toContain(
    "'alter system set ssl_cert_file = '\\''/etc/metalship/postgresql-tls/cert.pem'\\'';'",
  );
  expect(pgItem).toContain(
    'chown root:postgres /etc/metalship/postgresql-tls /etc/metalship/postgresql-tls/key.pem',
  );
  expect(pgItem).toContain('ms_apply chmod 600 /etc/metalship/postgresql-tls/ca.key');
  expect(pgItem).toContain('ms_changed "TLS certificate made"');
  expect(pgItem).toContain('openssl s_client -starttls postgres -connect "127.0.0.1:$(');
  expect(pgItem).toContain('|| [ "$tls_made" = 1 ]; then');
  expect(plan.redis!.item!.script).toContain("redis_bind='127.0.0.1 -::1 10.1.0.9'");
  // TLS alone on the Redis port, with the certificate made before the items (a new one restarts Redis).
  expect(plan.redis!.item!.script).toContain(
    "'port 0' 'tls-port 6379' 'tls-cert-file /etc/metalship/redis-tls/cert.pem' 'tls-key-file /etc/metalship/redis-tls/key.pem'",
  );
  expect(plan.redis!.item!.script).toContain("'tls-auth-clients no'");
  expect(plan.redis!.item!.script).not.toContain("'port 6379'");
  expect(plan.redis!.item!.script).toContain('ms_changed "TLS certificate made"');
  expect(plan.redis!.item!.script).toContain('openssl s_client -connect 127.0.0.1:6379');
  expect(plan.redis!.item!.script).toContain('if [ "$tls_made" = 1 ]; then restart=1; fi');
  expect(plan.redis!.item!.script).toContain('redis-cli -h 127.0.0.1 --tls --cacert "$redis_ca"');
  expect(hbaBlock(s)).toContain(
    'hostssl "shop" "shop" 10.1.0.5/32 scram-sha-256\nhostssl "shop" "shop" 10.1.0.6/32 scram-sha-256',
  );
  const fw = firewallItem(s).script;
  for (const a of ['10.1.0.5', '10.1.0.6'])
    for (const p of [5432, 6379]) expect(fw).toContain(`ms_rule allow from ${a} to any port ${p} proto tcp`);
  expect(fw).not.toMatch(/ms_rule allow 80\/tcp|ms_rule allow 6379|ms_rule allow 5432/);
  // Alerts: the backup's failure, the disk of the backups, the restore test, Redis's certificate (no site's here).
  const alerts = planItems(
    settings({
      ...topologyInputs(true),
      'alert-webhook': 'https://hooks.example.com/x',
      domains: 'shop.example.com',
      'acme-email': 'a@example.com',
    }),
    BOOKWORM,
  ).find((p) => p.name === 'alerts')!.item!.script;
  expect(alerts).toContain('metalship-backup-shop.service.d');
  expect(alerts).toContain('/var/backups/metalship/shop/.last-verified.json');
  expect(alerts).not.toContain('/etc/letsencrypt');
  expect(alerts).toContain('/etc/metalship/redis-tls/cert.pem');
  expect(alerts).toContain('/etc/metalship/postgresql-tls/cert.pem');
  // PostgreSQL's clusters (by their template) and Redis are served here: their failures alert.
  expect(alerts).toContain('ms_file /etc/systemd/system/postgresql@.service.d/metalship-alert-shop.conf ');
  expect(alerts).toContain('ms_file /etc/systemd/system/redis-server.service.d/metalship-alert-shop.conf ');
});

test('alerts on PostgreSQL and Redis where they run: a single host has them, an app host beside a db/redis host not', () => {
  const alertsOf = (extra: Record<string, string>) =>
    planItems(settings({ ...extra, 'alert-webhook': 'https://hooks.example.com/x' }), BOOKWORM).find(
      (p) => p.name === 'alerts',
    )!.item!.script;
  const dropIns = ['postgresql@.service', 'redis-server.service'].map(
    (u) => `/etc/systemd/system/${u}.d/metalship-alert-shop.conf`,
  );
  const single = alertsOf({});
  for (const d of dropIns) expect(single).toContain(`ms_file ${d} `);
  const beside = alertsOf(topologyInputs(false));
  for (const d of dropIns) {
    expect(beside).not.toContain(`ms_file ${d} `);
    expect(beside).toContain(`ms_apply rm -f ${d}`);
  }
  const off = alertsOf({ postgresql: 'false', redis: 'false' });
  for (const d of dropIns) expect(off).toContain(`ms_apply rm -f ${d}`);
  // nginx's failure alerts wherever a site is: a single host, an app host; not the db/redis host.
  const nginx = '/etc/systemd/system/nginx.service.d/metalship-alert-shop.conf';
  for (const script of [single, beside]) expect(script).toContain(`ms_file ${nginx} `);
  expect(alertsOf(topologyInputs(true))).toContain(`ms_apply rm -f ${nginx}`);
});

test('an app host beside a db/redis host: the PostgreSQL client alone, no Redis, nothing opened', () => {
  const s = settings(topologyInputs(false));
  expect(s.serves).toEqual({ db: false, redis: false, backup: false });
  const plan = Object.fromEntries(planItems(s, BOOKWORM).map((p) => [p.name, p]));
  expect(plan.postgresql!.item!.script).toContain('ms_install postgresql-client');
  expect(plan.postgresql!.item!.script).not.toMatch(/ms_install postgresql$/m);
  // Redis is the redis host's: here only its certificate, the CA of REDIS_URL.
  const ca = plan.redis!.item!.script;
  expect(ca).toContain('on 10.0.0.9 (roles=redis), over TLS');
  expect(ca).toContain('ms_file /etc/metalship/shop-redis-ca.pem 644 root:root');
  expect(ca).toContain(REDIS_PEM.trimEnd());
  expect(ca).not.toMatch(/ms_install redis-server|redis-cli/);
  // Its certificate unknown (not in the run): the file is left as it is.
  const unknownPlan = Object.fromEntries(
    planItems(settings(topologyInputs(false), null, {}), BOOKWORM).map((p) => [p.name, p]),
  );
  expect(unknownPlan.redis!.item!.script).not.toContain('ms_file /etc/metalship/shop-redis-ca.pem');
  expect(unknownPlan.redis!.item!.script).toContain('ms_warn');
  // Likewise the db host's certificate, the root DATABASE_URL trusts.
  const pg = plan.postgresql!.item!.script;
  expect(pg).toContain('on 10.0.0.9 (roles=db), over TLS');
  expect(pg).toContain('ms_file /etc/metalship/shop-postgresql-ca.pem 644 root:root');
  expect(pg).toContain(POSTGRESQL_PEM.trimEnd());
  expect(unknownPlan.postgresql!.item!.script).not.toContain('ms_file /etc/metalship/shop-postgresql-ca.pem');
  expect(unknownPlan.postgresql!.item!.script).toContain('ms_warn');
  expect(firewallItem(s).script).not.toMatch(/5432|6379/);
  expect(plan.app!.item).not.toBeNull();
});

const withEnv = (action: 'provision' | 'deploy' | 'release', env: string) => () =>
  parseInputs(
    action,
    raw({
      ...base,
      ...topologyInputs(false),
      env,
      ...(action === 'provision' ? {} : { source: '.', 'python-bin': '/usr/bin/python3' }),
    }),
  );

test('a REDIS_URL to the redis host must be rediss:// verifying its CA, before any host is contacted', () => {
  const withUrl = (url: string) => withEnv('provision', `REDIS_URL='${url}'\n`);
  expect(withUrl('redis://shop:pw123@10.1.0.9:6379/0')).toThrow(
    /Input 'env': REDIS_URL points at the redis host 10\.0\.0\.9 \(10\.1\.0\.9\), which serves Redis over TLS only.*expected rediss:\/\/<user>:<password>@10\.1\.0\.9:6379\/<db>\?ssl_ca_certs=\/etc\/metalship\/shop-redis-ca\.pem/,
  );
  const good = 'rediss://shop:pw123@10.1.0.9:6379/0?ssl_ca_certs=/etc/metalship/shop-redis-ca.pem';
  for (const bad of [
    'rediss://shop:pw123@10.1.0.9:6379/0',
    // Verification turned off, or the CA hidden behind a fragment (redis-py reads '#' as one).
    `${good}&ssl_cert_reqs=none`,
    `${good}&ssl_check_hostname=false`,
    // Another CA beside it.
    `${good}&ssl_ca_path=/etc/ssl/certs`,
    `${good}&ssl_ca_data=x`,
    'rediss://shop:pw123@10.1.0.9:6379/0?x=#&ssl_ca_certs=/etc/metalship/shop-redis-ca.pem',
    // Other spellings of the address.
    'redis://shop:pw123@167837705:6379/0',
    'redis://shop:pw@x@10.1.0.9:6379/0',
  ])
    expect(withUrl(bad)).toThrow(/REDIS_URL points at the redis host/);
  expect(withUrl(good)).not.toThrow();
  expect(withUrl(`${good}&ssl_cert_reqs=required`)).not.toThrow();
  // Another Redis than the redis host's is the user's to configure.
  expect(withUrl('redis://shop:pw123@10.1.0.77:6379/0')).not.toThrow();
});

test('a DATABASE_URL to the db host must verify its CA (verify-full, its copy as root) in every reading of it, before any host is contacted', () => {
  // Quoted as .env values with '#' or spaces must be (double quotes around single ones).
  const withUrl = (url: string) =>
    withEnv('provision', `DATABASE_URL=${url.includes("'") ? `"${url}"` : `'${url}'`}\n`);
  const ca = '/etc/metalship/shop-postgresql-ca.pem';
  const good = `postgresql://shop:pw123@10.1.0.9:5432/shop?sslmode=verify-full&sslrootcert=${ca}`;
  const refusal = withUrl('postgresql://shop:S3cret-pw@10.1.0.9:5432/shop?sslmode=require');
  expect(refusal).toThrow(
    /Input 'env': DATABASE_URL points at the db host 10\.0\.0\.9 \(10\.1\.0\.9\), which serves PostgreSQL with a CA of its own.*expected postgresql:\/\/<user>:<password>@10\.1\.0\.9:5432\/<database>\?sslmode=verify-full&sslrootcert=\/etc\/metalship\/shop-postgresql-ca\.pem/,
  );
  // The message repeats nothing of the URL: no password, whatever its spelling.
  expect(refusal).not.toThrow(/S3cret/);
  const slashed = withUrl('postgresql://shop:Sec/ret-Pw@/shop?host=10.1.0.9');
  expect(slashed).toThrow(/DATABASE_URL points at the db host/);
  expect(slashed).not.toThrow(/Sec\/ret|ret-Pw/);
  for (const bad of [
    'postgresql://shop:pw123@10.1.0.9:5432/shop',
    `postgresql://shop:pw123@10.1.0.9/shop?sslmode=verify-ca&sslrootcert=${ca}`,
    'postgresql://shop:pw123@10.1.0.9/shop?sslmode=verify-full&sslrootcert=/tmp/mine.pem',
    'postgresql://shop:pw123@10.1.0.9/shop?sslmode=verify-full&sslrootcert=system',
    `${good}&sslmode=disable`,
    // The host in the query (libpq reads it over the URL's), or one of several.
    'postgresql://shop:pw123@/shop?host=10.1.0.9&sslmode=prefer',
    'postgresql://shop:pw123@/shop?host=10.1.0.8,10.1.0.9',
    'postgresql://shop:pw123@db.example/shop?hostaddr=167837705',
    // Characters some clients read as text in a password or a value: '?' and '#'.
    'postgresql://shop:pw?x@10.1.0.9/shop?sslmode=require',
    `postgresql://shop:pw123@10.1.0.9/shop?sslrootcert=${ca}#&sslmode=require`,
    `postgresql://shop:pw123@10.1.0.9/shop?sslmode=verify-full&sslrootcert=${ca}#&sslmode=require`,
    // Other spellings of the address: inet_aton's forms, IPv4-mapped IPv6, %-encoding.
    'postgresql://shop:pw123@167837705/shop',
    'postgresql://shop:pw123@10.1.9/shop',
    'postgresql://shop:pw123@0xa.1.0.9/shop',
    'postgresql://shop:pw123@[::ffff:10.1.0.9]/shop',
    'postgresql://shop:pw123@%31%30.1.0.9/shop',
    // A key=value connection string.
    'host=10.1.0.9 dbname=shop user=shop sslmode=require',
    `host='10.1.0.9' sslmode=verify-full sslrootcert='/tmp/x.pem'`,
    // A malformed %-escape does not crash the check.
    'postgresql://shop:pw123@[fe80::1%eth0],10.1.0.9/shop',
    // A comma %-encoded in the host list (libpq decodes, then splits).
    'postgresql://shop:pw123@x.invalid%2C10.1.0.9:5432/shop?sslmode=require',
    'postgresql://shop:pw123@10.1.0.9%2C/shop?sslmode=require',
  ])
    expect(withUrl(bad)).toThrow(/DATABASE_URL points at the db host/);
  // No host in it: libpq takes PGHOST or PGHOSTADDR, which env may set; a service file is refused.
  for (const env of [
    'DATABASE_URL=postgresql://shop:pw@/shop?sslmode=require\nPGHOST=10.1.0.9\n',
    "DATABASE_URL='user=shop dbname=shop sslmode=require'\nPGHOSTADDR=10.1.0.9\n",
    'DATABASE_URL=postgresql://shop:pw@10.1.0.9/shop?service=x\n',
    `DATABASE_URL=${good}\nPGSERVICE=x\n`,
    // hostaddr from the environment beside a URL naming a host: libpq connects there.
    'DATABASE_URL=postgresql://shop:pw@db.internal/shop\nPGHOSTADDR=10.1.0.9\n',
  ])
    expect(withEnv('provision', env)).toThrow(/DATABASE_URL points at the db host/);
  expect(withEnv('provision', 'DATABASE_URL=postgresql://shop:pw@/shop\n')).not.toThrow();
  expect(withUrl(good)).not.toThrow();
  expect(withUrl(good.replace('postgresql:', 'postgresql+psycopg2:'))).not.toThrow();
  expect(withUrl(good.replace('postgresql:', 'postgres:'))).not.toThrow();
  expect(withUrl(good.replace('pw123', 'p%40ss'))).not.toThrow();
  expect(withUrl(`host=10.1.0.9 dbname=shop sslmode=verify-full sslrootcert='${ca}'`)).not.toThrow();
  // Another database than the db host's is the user's to configure.
  expect(withUrl('postgresql://shop:pw123@10.1.0.77:5432/shop?sslmode=require')).not.toThrow();
  expect(withUrl('postgresql://shop:pw123@[fe80::1%eth0]/shop')).not.toThrow();
});

test("a release's own env is checked as provision's is (deploy and release)", () => {
  for (const action of ['deploy', 'release'] as const) {
    expect(withEnv(action, 'DATABASE_URL=postgresql://shop:pw@10.1.0.9/shop?sslmode=require\n')).toThrow(
      /Input 'env': DATABASE_URL points at the db host/,
    );
    expect(withEnv(action, 'REDIS_URL=redis://shop:pw@10.1.0.9:6379/0\n')).toThrow(
      /Input 'env': REDIS_URL points at the redis host/,
    );
  }
});

test("the redis and db hosts' certificate step: a CA of their own, never made in check mode; the CA read back", () => {
  const made = redisTlsStep('10.1.0.9', false);
  expect(made.script).toContain('-checkip 10.1.0.9');
  expect(made.script).toContain(
    'openssl verify -CAfile /etc/metalship/redis-tls/ca.pem /etc/metalship/redis-tls/cert.pem',
  );
  expect(made.script).toContain("'basicConstraints = critical,CA:TRUE,pathlen:0'");
  // The server certificate keeps the addresses it had (another app may use one) and adds this one.
  expect(made.script).toContain('echo 10.1.0.9; echo 127.0.0.1; } | sort -u');
  expect(made.script).toContain('-CA /etc/metalship/redis-tls/ca.pem -CAkey /etc/metalship/redis-tls/ca.key');
  const check = redisTlsStep('10.1.0.9', true).script;
  expect(check).not.toContain('openssl req');
  expect(check).toContain('echo RENEW');
  const pem = '-----BEGIN CERTIFICATE-----\nMIIB\nAbC=\n-----END CERTIFICATE-----\n';
  const parsed = (made: boolean, stale: boolean, renew: boolean) => ({
    certificate: pem,
    made,
    stale,
    renew,
    shared: '',
  });
  expect(made.parse(`MADE\n${pem}`)).toEqual(parsed(true, false, false));
  expect(made.parse(pem)).toEqual(parsed(false, false, false));
  expect(made.parse('')).toEqual({ certificate: null, made: false, stale: false, renew: false, shared: '' });
  // Other apps using the CA keep it from being replaced, and are named.
  expect(made.parse(`STALE\nSHARED shop2 shop3\n${pem}`)).toMatchObject({
    stale: true,
    shared: 'shop2 shop3',
  });
  expect(made.parse(`STALE\n${pem}`)).toEqual(parsed(false, true, false));
  expect(made.parse(`RENEW\n${pem}`)).toEqual(parsed(false, false, true));
  // With app hosts left out (limit), a CA in use (or the self-signed certificate of before) is kept.
  expect(redisTlsStep('10.1.0.9', false, false).script).toContain(
    'if ! ca_valid && { { false && [ -z "$others" ]; } || [ ! -s /etc/metalship/redis-tls/cert.pem ]; }; then',
  );
  // The db host's: the same step, its own files; the CN is the address too (libpq before 14 matches the CN alone).
  const pg = postgresqlTlsStep('10.1.0.9', false).script;
  expect(pg).toContain("-subj '/O=metalship PostgreSQL/CN=10.1.0.9'");
  expect(pg).toContain('-keyout /etc/metalship/postgresql-tls/ca.key.new');
  expect(pg).not.toContain('redis');
  expect(postgresqlTlsStep('10.1.0.9', false, true, 'shop').script).toContain('grep -vxF -- shop');
  // A key beside the certificate that is not its own makes the certificate anew.
  expect(pg).toContain('openssl pkey -pubout -in /etc/metalship/postgresql-tls/key.pem');
});
