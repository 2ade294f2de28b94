// The production topology end to end on this file's own hosts, joined by a
// private LAN: the app's PostgreSQL and Redis on a host of their own
// (roles=db,redis; Redis over TLS only), two app hosts, and an outsider on the
// same LAN that is no app host. The app hosts' local PostgreSQL and Redis (the image has them) are
// stopped first: whatever the app reads, it reads from the db host.
import { rm } from 'node:fs/promises';
import {
  E2E_INDEX,
  httpGet,
  outcome,
  ownHostSpecs,
  registerSecret,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  type BundleRun,
} from '../support/e2e.js';
import {
  bootHosts,
  ensureKey,
  shutdownHosts,
  sshRun,
  type HostKeyPair,
  type TestHost,
} from '../support/hosts.js';
import { E2E_PREFIX } from '../support/e2e.js';
import { startReceiver, type Receiver } from '../support/alerts.js';

const APP = 'topo';
const SPECS = ownHostSpecs('t', [30, 31, 32, 33]);
/** This file's own LAN (the shared hosts' is 10.214.INDEX.0/24). */
const LAN = { tag: `tp${E2E_INDEX}`, address: (n: number) => `10.216.${E2E_INDEX}.${n}` };
const DB_PASSWORD = 'topo-Db-Secret-7';
const REDIS_PASSWORD = 'topo-Redis-Secret-8';
const DB_ADDRESS = LAN.address(1);
const TOKEN = 'topo-alert-token-6b1d';
/** Where provision puts the redis host's certificate on each app host: REDIS_URL's one CA. */
const REDIS_CA = `/etc/metalship/${APP}-redis-ca.pem`;
const REDIS_TLS = `--tls --cacert ${REDIS_CA}`;
/** Where provision puts the db host's certificate on each app host: DATABASE_URL's one root. */
const PG_CA = `/etc/metalship/${APP}-postgresql-ca.pem`;
const PG_VERIFY = `sslmode=verify-full&sslrootcert=${PG_CA}`;

let key: HostKeyPair;
let db: TestHost;
let apps: [TestHost, TestHost];
let outsider: TestHost;
let source: string;
let receiver: Receiver;

async function on(host: TestHost, command: string): Promise<string> {
  const r = await sshRun(host, key, command, { idleMs: 120000 });
  if (r.code !== 0)
    throw new Error(`'${command.slice(0, 120)}' failed on ${host.name} (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Exit code and output of a command that may fail. */
async function attempt(host: TestHost, command: string): Promise<{ code: number; out: string }> {
  const r = await sshRun(host, key, command, { idleMs: 120000 });
  return { code: r.code, out: r.stdout + r.stderr };
}

function connection(): Record<string, string> {
  return {
    hosts: [
      `${db.address} roles=db,redis private=${DB_ADDRESS}`,
      `${apps[0].address} roles=api,worker,scheduler,migrate private=${LAN.address(2)}`,
      `${apps[1].address} roles=api,worker private=${LAN.address(3)}`,
    ].join('\n'),
    'ssh-key': key.privateKey,
    'known-hosts': [db, ...apps].map((h) => h.knownHosts).join('\n'),
  };
}

const ENV =
  `DATABASE_URL=postgresql://${APP}:${DB_PASSWORD}@${DB_ADDRESS}:5432/${APP}?${PG_VERIFY}\n` +
  `REDIS_URL=rediss://${APP}:${REDIS_PASSWORD}@${DB_ADDRESS}:6379/0?ssl_ca_certs=${REDIS_CA}\n`;

function provisionInputs(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...connection(),
    app: APP,
    // no apt mirror reachable from a test host; the full image has the packages
    system: 'false',
    'ssh-hardening': 'false',
    'worker-command': 'python -m worker',
    'scheduler-command': 'python -m scheduler',
    env: ENV,
    'db-password': DB_PASSWORD,
    'redis-password': REDIS_PASSWORD,
    'alert-webhook': `${receiver.base}/alert/${TOKEN}`,
    ...extra,
  };
}

type Results = { host: string; ok: boolean; items: { item: string; status: string; detail: string }[] }[];
function itemsOf(r: BundleRun, host: TestHost): Record<string, { status: string; detail: string }> {
  const res = (JSON.parse(r.outputs.results!) as Results).find((x) => x.host === host.address)!;
  return Object.fromEntries(res.items.map((i) => [i.item, i]));
}

/** Can `from` open a TCP connection to the db host's private address on port? */
async function reaches(from: TestHost, port: number): Promise<boolean> {
  const r = await attempt(from, `timeout 5 bash -c 'exec 3<>/dev/tcp/${DB_ADDRESS}/${port}'`);
  return r.code === 0;
}

const processed = (h: TestHost, prefix: string) =>
  on(
    h,
    `journalctl --namespace=${APP} -u '${APP}-worker@*.service' --no-pager -o cat | grep -o 'processed job ${prefix}[0-9]*' | sort || true`,
  ).then((s) =>
    s
      .split('\n')
      .filter(Boolean)
      .map((l) => l.replace('processed job ', '')),
  );
const redisAs = (from: TestHost, command: string) =>
  on(
    from,
    `REDISCLI_AUTH='${REDIS_PASSWORD}' redis-cli ${REDIS_TLS} --no-auth-warning -h ${DB_ADDRESS} --user ${APP} ${command}`,
  );

beforeAll(async () => {
  registerSecret('the topology database password', DB_PASSWORD);
  registerSecret('the topology Redis password', REDIS_PASSWORD);
  registerSecret('the topology alert token', TOKEN);
  key = await ensureKey(`/run/metalship-e2e-topology/${E2E_PREFIX}key`);
  await shutdownHosts(SPECS.map((h) => h.name));
  const booted = await bootHosts(
    SPECS.map((s, i) => ({ ...s, lan: `${LAN.tag}:${LAN.address(i + 1)}` })),
    key,
  );
  [db, apps, outsider] = [booted[0]!, [booted[1]!, booted[2]!], booted[3]!];
  // The app hosts' own PostgreSQL and Redis are off: nothing can be served from them.
  for (const h of apps)
    await on(
      h,
      'systemctl disable --now --quiet postgresql redis-server 2>/dev/null; systemctl mask --quiet postgresql redis-server',
    );
  source = await sampleAppCopy('topology');
  // On the machine side of the db host's veth.
  receiver = await startReceiver(`10.213.${SPECS[0]!.index}.1`);
}, 300000);

afterAll(async () => {
  await receiver?.stop();
  if (source) await rm(source, { recursive: true, force: true });
  if (!process.env.METALSHIP_KEEP_HOSTS) await shutdownHosts(SPECS.map((h) => h.name));
});

test('provision: PostgreSQL and Redis on the db host for the app hosts alone; the app hosts get neither server', async () => {
  const r = await runBundle('provision', provisionInputs(), { idleMs: 400000 });
  expect(r.stdout).not.toMatch(/::error::/);
  expect(outcome(r)).toBe('succeeded');
  expect(r.log).not.toContain(DB_PASSWORD);
  expect(r.log).not.toContain(REDIS_PASSWORD);
  const dbItems = itemsOf(r, db);
  for (const item of ['python', 'app', 'nginx'])
    expect(dbItems[item]!.detail).toMatch(/roles=db,redis: no (app|site) here/);
  expect(dbItems.postgresql!.status).toBe('changed');
  expect(dbItems.redis!.status).toBe('changed');
  // Each service's CA (its key root's alone) and the server certificate it signs (its key the service's to read).
  const certificate = await on(db, 'cat /etc/metalship/redis-tls/ca.pem');
  expect(certificate).toMatch(/^-----BEGIN CERTIFICATE-----\n/);
  const pgCertificate = await on(db, 'cat /etc/metalship/postgresql-tls/ca.pem');
  expect(pgCertificate).toMatch(/^-----BEGIN CERTIFICATE-----\n/);
  expect(pgCertificate).not.toBe(certificate);
  expect(
    await on(
      db,
      'cd /etc/metalship && stat -c "%n %a:%U:%G" redis-tls/key.pem redis-tls/ca.key postgresql-tls/key.pem postgresql-tls/ca.key && openssl verify -CAfile redis-tls/ca.pem redis-tls/cert.pem && openssl verify -CAfile postgresql-tls/ca.pem postgresql-tls/cert.pem',
    ),
  ).toBe(
    'redis-tls/key.pem 640:root:redis\nredis-tls/ca.key 600:root:root\npostgresql-tls/key.pem 640:root:postgres\npostgresql-tls/ca.key 600:root:root\nredis-tls/cert.pem: OK\npostgresql-tls/cert.pem: OK\n',
  );
  for (const h of apps) {
    const items = itemsOf(r, h);
    expect(items.redis!.detail).toContain(`on ${db.address} (roles=redis)`);
    // The redis host's CA, the one the app's REDIS_URL names; the db host's, DATABASE_URL's root.
    expect(await on(h, `cat ${REDIS_CA}`)).toBe(certificate);
    expect(await on(h, `cat ${PG_CA}`)).toBe(pgCertificate);
    expect(items.postgresql!.status).not.toBe('failed');
    expect(await on(h, 'systemctl is-active postgresql redis-server || true')).not.toMatch(/^active/m);
  }
  // PostgreSQL listens on loopback and the private address, with SSL; pg_hba lets each app host in over SSL.
  const psql = (sql: string) => on(db, `cd / && runuser -u postgres -- psql -XAtq -c "${sql}"`);
  expect((await psql('show listen_addresses')).trim()).toBe(`localhost,${DB_ADDRESS}`);
  expect((await psql('show ssl')).trim()).toBe('on');
  expect((await psql('show ssl_cert_file')).trim()).toBe('/etc/metalship/postgresql-tls/cert.pem');
  const hba = await on(db, `cat "$(runuser -u postgres -- psql -XAtq -c 'show hba_file')"`);
  for (const n of [2, 3])
    expect(hba).toContain(`hostssl "${APP}" "${APP}" ${LAN.address(n)}/32 scram-sha-256`);
  expect(await on(db, 'ss -Hltn')).toMatch(new RegExp(`${DB_ADDRESS.replace(/\./g, '\\.')}:6379`));
  const ufw = await on(db, 'ufw status');
  for (const n of [2, 3])
    for (const p of [5432, 6379])
      expect(ufw).toMatch(new RegExp(`${p}/tcp +ALLOW +${LAN.address(n).replace(/\./g, '\\.')}`));
  expect(ufw).not.toMatch(/^80\/tcp/m);

  const again = await runBundle('provision', provisionInputs());
  expect(outcome(again)).toBe('succeeded');
  expect(again.outputs.changed).toBe('0');

  // A db host provisioned before it had a certificate of its own (Debian's snakeoil one):
  // the next provision sets its own with a reload, not a restart (sessions stay up).
  // One statement per call: ALTER SYSTEM refuses to run inside a transaction block.
  await psql("alter system set ssl_cert_file = '/etc/ssl/certs/ssl-cert-snakeoil.pem'");
  await psql("alter system set ssl_key_file = '/etc/ssl/private/ssl-cert-snakeoil.key'");
  await psql('select pg_reload_conf()');
  const started = await psql('select pg_postmaster_start_time()');
  const upgraded = await runBundle('provision', provisionInputs());
  expect(outcome(upgraded)).toBe('succeeded');
  expect(itemsOf(upgraded, db).postgresql!.detail).toContain("SSL on with this host's own certificate");
  expect((await psql('show ssl_cert_file')).trim()).toBe('/etc/metalship/postgresql-tls/cert.pem');
  expect(await psql('select pg_postmaster_start_time()')).toBe(started);
  const verified = await attempt(
    apps[0],
    `cd / && PGPASSWORD='${DB_PASSWORD}' PGCONNECT_TIMEOUT=5 psql -XAtq "host=${DB_ADDRESS} user=${APP} dbname=${APP} sslmode=verify-full sslrootcert=${PG_CA}" -c 'select 1'`,
  );
  expect(verified).toMatchObject({ code: 0, out: '1\n' });

  // A run that made a new server certificate and was stopped before PostgreSQL and Redis took it
  // (made here by hand, from the same CA): the next run sees what they serve and has them take it.
  const served = (probe: string) =>
    on(
      apps[0],
      `timeout 10 openssl s_client ${probe} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256`,
    );
  const onDisk = (service: string) =>
    on(db, `openssl x509 -noout -fingerprint -sha256 -in /etc/metalship/${service}-tls/cert.pem`);
  const pgProbe = `-starttls postgres -connect ${DB_ADDRESS}:5432`;
  const redisProbe = `-connect ${DB_ADDRESS}:6379`;
  for (const service of ['postgresql', 'redis'])
    await on(
      db,
      `set -e; cd /etc/metalship/${service}-tls; (umask 077; openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=${DB_ADDRESS} -keyout k.new -out r.new 2>/dev/null); printf 'subjectAltName=IP:${DB_ADDRESS},IP:127.0.0.1\n' > e.new; openssl x509 -req -in r.new -CA ca.pem -CAkey ca.key -set_serial 7 -days 90 -extfile e.new -out c.new 2>/dev/null; chown --reference=key.pem k.new; chmod --reference=key.pem k.new; chmod 644 c.new; mv k.new key.pem; mv c.new cert.pem; rm r.new e.new`,
    );
  expect(await served(pgProbe)).not.toBe(await onDisk('postgresql'));
  expect(await served(redisProbe)).not.toBe(await onDisk('redis'));
  const mended = await runBundle('provision', provisionInputs());
  expect(outcome(mended)).toBe('succeeded');
  expect(itemsOf(mended, db).postgresql!.detail).toContain('PostgreSQL serves its current TLS certificate');
  expect(await served(pgProbe)).toBe(await onDisk('postgresql'));
  expect(await served(redisProbe)).toBe(await onDisk('redis'));
  // The app hosts' CAs did not change, and they verify the new certificates.
  for (const h of apps) expect(await on(h, `cat ${PG_CA}`)).toBe(pgCertificate);
  expect(
    await attempt(
      apps[1],
      `cd / && PGPASSWORD='${DB_PASSWORD}' PGCONNECT_TIMEOUT=5 psql -XAtq "host=${DB_ADDRESS} user=${APP} dbname=${APP} sslmode=verify-full sslrootcert=${PG_CA}" -c 'select 1'`,
    ),
  ).toMatchObject({ code: 0, out: '1\n' });
  const settled = await runBundle('provision', provisionInputs());
  expect(outcome(settled)).toBe('succeeded');
  expect(settled.outputs.changed).toBe('0');
});

test("provision acts on the postgres account's files as that account: its links lead root nowhere", async () => {
  // As postgres (superuser of the cluster, owner of its configuration directory): a link named like a
  // configuration file to a root file any user may read, and this app's pg_hba rules removed so that
  // provision rewrites the file. Root used to chmod through the link and write the rules through a
  // link at a name it chose.
  const confDir = (
    await on(db, 'dirname "$(runuser -u postgres -- psql -XAtq -c \'show config_file\')"')
  ).trim();
  await on(db, 'printf "victim\\n" > /etc/metalship-victim && chmod 644 /etc/metalship-victim');
  await on(
    db,
    `runuser -u postgres -- bash -c 'ln -sfn /etc/metalship-victim ${confDir}/zz-victim.conf; ln -sfn /etc/metalship-victim ${confDir}/pg_hba.conf.metalship-new; hba=$(psql -XAtq -c "show hba_file"); sed -i "/# BEGIN metalship ${APP}/,/# END metalship ${APP}/d" "$hba"'`,
  );
  try {
    const r = await runBundle('provision', provisionInputs());
    expect(outcome(r)).toBe('succeeded');
    expect(itemsOf(r, db).postgresql!.detail).toContain('pg_hba rules for the app');
    expect(await on(db, 'stat -c "%a %U:%G" /etc/metalship-victim; cat /etc/metalship-victim')).toBe(
      '644 root:root\nvictim\n',
    );
    // The rules are back, in a file of the postgres account's own.
    const hba = await on(db, `stat -c "%U %F" "$(runuser -u postgres -- psql -XAtq -c 'show hba_file')"`);
    expect(hba).toBe('postgres regular file\n');
    expect(await pgLogin(APP, DB_PASSWORD)).toMatchObject({ code: 0, out: 'topo|topo\n' });
  } finally {
    await on(
      db,
      `rm -f ${confDir}/zz-victim.conf ${confDir}/pg_hba.conf.metalship-new /etc/metalship-victim`,
    );
  }
});

test('the network admits the app hosts alone: ufw per source address, pg_hba per source and SSL only', async () => {
  // Same LAN, another source: ufw drops it.
  expect(await reaches(apps[1], 5432)).toBe(true);
  expect(await reaches(apps[1], 6379)).toBe(true);
  expect(await reaches(outsider, 5432)).toBe(false);
  expect(await reaches(outsider, 6379)).toBe(false);
  const login = (from: TestHost, ssl: string) =>
    attempt(
      from,
      `cd / && PGPASSWORD='${DB_PASSWORD}' PGCONNECT_TIMEOUT=5 psql -XAtq "host=${DB_ADDRESS} user=${APP} dbname=${APP} sslmode=${ssl}" -c 'select ssl from pg_stat_ssl where pid = pg_backend_pid()'`,
    );
  expect(await login(apps[1], 'require')).toMatchObject({ code: 0, out: 't\n' });
  // The app's URL verifies the db host's own certificate; another root (the system's CAs, as a client
  // talking to a machine in the middle would have to trust) is refused before any password is sent.
  expect(await login(apps[1], `verify-full sslrootcert=${PG_CA}`)).toMatchObject({ code: 0, out: 't\n' });
  const untrustedPg = await login(apps[1], 'verify-full sslrootcert=/etc/ssl/certs/ca-certificates.crt');
  expect(untrustedPg.code).not.toBe(0);
  expect(untrustedPg.out).toMatch(/certificate verify failed/);
  // The certificate names the private address alone (and loopback): another name for the host is refused.
  const otherName = await attempt(
    apps[1],
    `cd / && PGPASSWORD='${DB_PASSWORD}' PGCONNECT_TIMEOUT=5 psql -XAtq "host=${db.name} hostaddr=${DB_ADDRESS} user=${APP} dbname=${APP} sslmode=verify-full sslrootcert=${PG_CA}" -c 'select 1'`,
  );
  expect(otherName.code).not.toBe(0);
  expect(otherName.out).toMatch(/does not match host name/);
  const plain = await login(apps[1], 'disable');
  expect(plain.code).not.toBe(0);
  expect(plain.out).toMatch(
    // PostgreSQL 13 (Debian 11) says "SSL off".
    /no pg_hba\.conf entry for host "[0-9.]+", user "topo", database "topo", (no encryption|SSL off)/,
  );
  // The db host's own private address passes ufw (local traffic) but is no app host: pg_hba refuses it.
  const self = await login(db, 'require');
  expect(self.code).not.toBe(0);
  expect(self.out).toMatch(
    new RegExp(`no pg_hba\\.conf entry for host "${DB_ADDRESS.replace(/\./g, '\\.')}"`),
  );
  // Redis, over TLS trusting the redis host's certificate: the app's user with its password, nobody without.
  expect((await redisAs(apps[1], 'ping')).trim()).toBe('PONG');
  expect((await attempt(apps[1], `redis-cli ${REDIS_TLS} -h ${DB_ADDRESS} ping`)).out).toMatch(
    /NOAUTH|NOPERM|WRONGPASS|authentication/,
  );
  // Plain TCP on the Redis port, with the right password: no answer but a closed connection.
  const plainRedis = await attempt(
    apps[1],
    `REDISCLI_AUTH='${REDIS_PASSWORD}' timeout 10 redis-cli --no-auth-warning -h ${DB_ADDRESS} --user ${APP} ping`,
  );
  expect(plainRedis.out).not.toMatch(/PONG/);
  // Nor any reply in Redis's protocol (a plain Redis answers -NOAUTH): the TLS port reads plain text as a failed handshake.
  const raw = await attempt(
    apps[1],
    `exec 3<>/dev/tcp/${DB_ADDRESS}/6379 && printf 'PING\\r\\n' >&3 && timeout 5 cat <&3 | head -c 200 | od -c | head -n 3`,
  );
  expect(raw.out).not.toMatch(/^0000000 +[-+]/m);
  // A client that does not trust the redis host's certificate (the system's CAs) refuses it.
  const untrusted = await attempt(
    apps[1],
    `REDISCLI_AUTH='${REDIS_PASSWORD}' timeout 10 redis-cli --tls --cacert /etc/ssl/certs/ca-certificates.crt --no-auth-warning -h ${DB_ADDRESS} --user ${APP} ping`,
  );
  expect(untrusted.out).not.toMatch(/PONG/);
  expect(untrusted.out).toMatch(/certificate verify failed/i);
  // The app's client (redis-py, from REDIS_URL): with the CA the URL names it logs in, without it it refuses the certificate.
  const py = (query: string) =>
    attempt(
      apps[1],
      `cd / && timeout 20 python3 -c "import redis; print(redis.Redis.from_url('rediss://${APP}:${REDIS_PASSWORD}@${DB_ADDRESS}:6379/0${query}', socket_connect_timeout=5).ping())"`,
    );
  expect(await py(`?ssl_ca_certs=${REDIS_CA}`)).toMatchObject({ code: 0, out: 'True\n' });
  const pyUntrusted = await py('');
  expect(pyUntrusted.code).not.toBe(0);
  expect(pyUntrusted.out).toMatch(/CERTIFICATE_VERIFY_FAILED/);
});

test('deploy migrates against the db host (pre-migration backup over SSL) and the app serves its data', async () => {
  const r = await runBundle('deploy', {
    ...connection(),
    ...sampleAppInputs(APP, source),
    migrate: 'true',
    'verify-path': '/health',
  });
  expect(r.stdout).not.toMatch(/::error::/);
  expect(outcome(r)).toBe('succeeded');
  // The pre-migration dump on the migrate host, taken from the db host.
  expect(await on(apps[0], `ls /var/backups/metalship/${APP}/pre-migrate`)).toMatch(/\.dump$/m);
  await on(
    db,
    `cd / && runuser -u postgres -- psql -XAtq -d ${APP} -c "insert into items (name) values ('from-the-db-host')"`,
  );
  for (const h of apps) {
    const res = await httpGet(h.address, '/items');
    expect(res.status).toBe(200);
    expect((JSON.parse(res.body) as { items: string[] }).items).toEqual([
      'apple',
      'banana',
      'cherry',
      'from-the-db-host',
    ]);
    const health = JSON.parse((await httpGet(h.address, '/health')).body) as Record<string, string>;
    expect(health).toMatchObject({ status: 'healthy', redis: 'ok', database: 'ok' });
  }
});

test('one queue: a task enqueued on host A runs on host B exactly once; both workers consume', async () => {
  const [a, b] = apps;
  // The tasks of this test as the two workers' journals record them (the scheduler enqueues its own besides).
  const ran = async (prefix: string) => ({ a: await processed(a, prefix), b: await processed(b, prefix) });
  const waitFor = async (prefix: string, n: number) => {
    for (let i = 0; i < 600; i++) {
      const r = await ran(prefix);
      if (r.a.length + r.b.length >= n) return;
      await on(a, 'sleep 0.5');
    }
  };
  // A's worker is stopped: the task A enqueues can only run on B.
  await on(a, `systemctl stop "${APP}-worker@$(basename "$(readlink /opt/${APP}/current)").service"`);
  await redisAs(a, `lpush ${APP}:jobs ab-1`);
  await waitFor('ab-', 1);
  expect(await ran('ab-')).toEqual({ a: [], b: ['ab-1'] });
  await on(a, `systemctl start "${APP}-worker@$(basename "$(readlink /opt/${APP}/current)").service"`);
  // Both workers wait on the queue now; tasks enqueued one by one from A each run once, on one of them.
  await on(
    a,
    `sleep 3; for i in $(seq 1 20); do REDISCLI_AUTH='${REDIS_PASSWORD}' redis-cli ${REDIS_TLS} --no-auth-warning -h ${DB_ADDRESS} --user ${APP} lpush ${APP}:jobs q-$i >/dev/null; sleep 0.3; done`,
  );
  await waitFor('q-', 20);
  // Settled: nothing runs twice later.
  await on(a, 'sleep 3');
  const r = await ran('q-');
  const all = [...r.a, ...r.b].sort((x, y) => Number(x.slice(2)) - Number(y.slice(2)));
  expect(all).toEqual([...Array(20).keys()].map((i) => `q-${i + 1}`));
  expect(r.a.length).toBeGreaterThan(0);
  expect(r.b.length).toBeGreaterThan(0);
  expect(await ran('ab-')).toEqual({ a: [], b: ['ab-1'] });
  process.stdout.write(`queue: ${r.a.length} tasks ran on host A, ${r.b.length} on host B\n`);
});

test("the db host's daily backup timer's service makes a backup with its manifest", async () => {
  expect((await on(db, `systemctl is-enabled metalship-backup-${APP}.timer`)).trim()).toBe('enabled');
  await on(db, `systemctl start metalship-backup-${APP}.service`);
  const files = await on(db, `ls /var/backups/metalship/${APP}`);
  expect(files).toMatch(new RegExp(`^${APP}_\\d{8}T\\d{6}Z_daily\\.dump$`, 'm'));
  expect(files).toMatch(new RegExp(`^${APP}_\\d{8}T\\d{6}Z_daily\\.manifest\\.json$`, 'm'));
  const manifest = await on(
    db,
    `cat "$(ls -1 /var/backups/metalship/${APP}/*_daily.manifest.json | tail -n1)"`,
  );
  expect((JSON.parse(manifest) as { tables: Record<string, number> }).tables).toMatchObject({
    'public.items': 4,
  });
});

test("backup-verify restores the db host's newest backup (a scratch database there) and checks it", async () => {
  const r = await runBundle('backup-verify', {
    'ssh-key': key.privateKey,
    'known-hosts': db.knownHosts,
    app: APP,
    'backup-host': db.address,
    'restore-host': db.address,
    checks: "SELECT count(*) = 4 FROM items\nSELECT bool_or(name = 'from-the-db-host') FROM items",
  });
  expect(r.stdout).not.toMatch(/::error::/);
  expect(outcome(r)).toBe('succeeded');
});

test('a failed daily backup on the db host reaches the alert webhook', async () => {
  const from = receiver.received.length;
  try {
    await on(
      db,
      `systemctl stop postgresql && systemctl mask --runtime --quiet postgresql && { systemctl start metalship-backup-${APP}.service; true; }`,
    );
    let alert;
    for (let i = 0; i < 300 && !alert; i++) {
      alert = receiver.alerts(from).find((a) => a.kind === 'backup');
      if (!alert) await on(db, 'sleep 0.2');
    }
    expect(alert).toMatchObject({ app: APP, kind: 'backup' });
    expect(alert!.detail).toMatch(new RegExp(`metalship-backup-${APP}\\.service failed`));
  } finally {
    await on(db, 'systemctl unmask --runtime --quiet postgresql && systemctl start postgresql');
  }
});

test('PostgreSQL killed on the db host reaches the alert webhook (and Redis there has the handler)', async () => {
  // The cluster's own unit (postgresql@13-main on Debian 11, @15-main on 12, @17-main on 13).
  const unit = (
    await on(
      db,
      "systemctl list-units --plain --no-legend --state=active 'postgresql@*.service' | awk '{print $1}'",
    )
  ).trim();
  expect(unit).toMatch(/^postgresql@[0-9]+-main\.service$/);
  // Redis restarts itself (Restart=always): a failure is when systemd gives up.
  expect(await on(db, 'systemctl show -p OnFailure --value redis-server.service')).toContain(
    `metalship-alert-${APP}@redis-server.service.service`,
  );
  const from = receiver.received.length;
  try {
    await on(db, `kill -KILL "$(systemctl show -p MainPID --value ${unit})"`);
    let alert;
    for (let i = 0; i < 300 && !alert; i++) {
      alert = receiver.alerts(from).find((a) => a.kind === 'unit' && a.detail.startsWith(`${unit} failed`));
      if (!alert) await on(db, 'sleep 0.2');
    }
    expect(alert).toMatchObject({ app: APP, kind: 'unit' });
  } finally {
    await on(db, `systemctl reset-failed ${unit}; systemctl start ${unit}`);
  }
});

// Passwords on the db host: what the app hosts' serving services log in with is
// read from them (under their locks), so the db host refuses as a single host does.
const NEW_DB = 'topo-Db-Rotated-9';
const NEW_REDIS = 'topo-Redis-Rotated-10';
const pgLogin = (user: string, password: string) =>
  attempt(
    apps[0],
    `cd / && PGPASSWORD='${password}' PGCONNECT_TIMEOUT=5 psql -XAtq "host=${DB_ADDRESS} user=${user} dbname=${APP} sslmode=verify-full sslrootcert=${PG_CA}" -c 'select current_user, session_user'`,
  );
const redisLogin = (password: string) =>
  attempt(
    apps[0],
    `REDISCLI_AUTH='${password}' redis-cli ${REDIS_TLS} --no-auth-warning -h ${DB_ADDRESS} --user ${APP} ping`,
  );
/** A login refused: redis-cli 6.0 (Debian 11) reports a failed AUTH as NOAUTH on the command after it. */
const WRONG_PASSWORD = /WRONGPASS|AUTH failed/;
/** The db host's item failed, saying why, and the run failed. */
function refused(r: BundleRun, item: string, why: RegExp): string {
  expect(r.code).not.toBe(0);
  expect(r.log).not.toContain(NEW_DB);
  expect(r.log).not.toContain(NEW_REDIS);
  const it = itemsOf(r, db)[item]!;
  expect(it.status).toBe('failed');
  expect(it.detail).toMatch(why);
  expect(it.detail).toContain('Nothing was changed');
  return it.detail;
}
/** The outcome of a run that should succeed, its errors in the failure message. */
function succeeded(r: BundleRun): string {
  if (outcome(r) !== 'succeeded')
    process.stdout.write(
      r.stdout
        .split('\n')
        .filter((l) => l.includes('::error::'))
        .join('\n'),
    );
  return outcome(r);
}

test('the db host refuses a PostgreSQL or Redis password the app hosts still log in with, naming the app host', async () => {
  registerSecret('the rotated topology database password', NEW_DB);
  registerSecret('the rotated topology Redis password', NEW_REDIS);
  const onApp = new RegExp(`on (${apps.map((h) => h.address.replace(/\./g, '\\.')).join('|')}) logs in to`);
  const pg = await runBundle('provision', provisionInputs({ 'db-password': NEW_DB }));
  expect(refused(pg, 'postgresql', /logs in to PostgreSQL as topo with another password/)).toMatch(onApp);
  expect(await pgLogin(APP, DB_PASSWORD)).toMatchObject({ code: 0, out: 'topo|topo\n' });
  expect((await pgLogin(APP, NEW_DB)).code).not.toBe(0);

  const redis = await runBundle('provision', provisionInputs({ 'redis-password': NEW_REDIS }));
  expect(
    refused(redis, 'redis', /logs in to Redis as topo with a password this change would take away/),
  ).toMatch(onApp);
  expect(await redisLogin(REDIS_PASSWORD)).toMatchObject({ code: 0, out: 'PONG\n' });
  expect((await redisLogin(NEW_REDIS)).out).toMatch(WRONG_PASSWORD);

  // The app hosts left out: their logins are unknown, so no password they may use changes.
  const limited = await runBundle(
    'provision',
    provisionInputs({ 'db-password': NEW_DB, 'redis-password': NEW_REDIS, limit: 'db' }),
  );
  for (const item of ['postgresql', 'redis'])
    expect(refused(limited, item, /are not in this run \(limit\)/)).toContain(apps[0].address);
  expect(await pgLogin(APP, DB_PASSWORD)).toMatchObject({ code: 0, out: 'topo|topo\n' });
  expect(await redisLogin(REDIS_PASSWORD)).toMatchObject({ code: 0, out: 'PONG\n' });
});

test('the documented rotations go through on the db host: db-login-user with db-previous-user, redis-previous-password', async () => {
  const rotatedEnv =
    `DATABASE_URL=postgresql://${APP}_b:${NEW_DB}@${DB_ADDRESS}:5432/${APP}?${PG_VERIFY}\n` +
    `REDIS_URL=rediss://${APP}:${NEW_REDIS}@${DB_ADDRESS}:6379/0?ssl_ca_certs=${REDIS_CA}\n`;
  const adding = {
    'db-login-user': `${APP}_b`,
    'db-password': NEW_DB,
    'db-previous-user': APP,
    'redis-password': NEW_REDIS,
    'redis-previous-password': REDIS_PASSWORD,
  };
  // 1. Add: both logins work.
  const add = await runBundle('provision', provisionInputs({ ...adding, env: rotatedEnv }));
  expect(succeeded(add)).toBe('succeeded');
  expect(await pgLogin(APP, DB_PASSWORD)).toMatchObject({ code: 0, out: 'topo|topo\n' });
  expect(await pgLogin(`${APP}_b`, NEW_DB)).toMatchObject({ code: 0, out: 'topo|topo_b\n' });
  expect(await redisLogin(REDIS_PASSWORD)).toMatchObject({ code: 0, out: 'PONG\n' });
  expect(await redisLogin(NEW_REDIS)).toMatchObject({ code: 0, out: 'PONG\n' });
  const removing = {
    'db-login-user': `${APP}_b`,
    'db-password': NEW_DB,
    'redis-password': NEW_REDIS,
    env: rotatedEnv,
  };
  // Removing the old ones while the app hosts still serve them: refused.
  const early = await runBundle('provision', provisionInputs(removing));
  refused(early, 'postgresql', /logs in to PostgreSQL as topo, whose password this run takes away/);
  refused(early, 'redis', /logs in to Redis as topo with a password this change would take away/);
  // 2. Switch: the app serves the new logins.
  const deploy = await runBundle('deploy', {
    ...connection(),
    ...sampleAppInputs(APP, source),
    'verify-path': '/health',
  });
  expect(succeeded(deploy)).toBe('succeeded');
  // 3. Remove: the old logins stop working, the app keeps serving.
  const remove = await runBundle('provision', provisionInputs(removing));
  expect(succeeded(remove)).toBe('succeeded');
  expect(itemsOf(remove, db).postgresql!.detail).toContain(`password of role ${APP} removed`);
  expect((await pgLogin(APP, DB_PASSWORD)).out).toMatch(/password authentication failed/);
  expect((await redisLogin(REDIS_PASSWORD)).out).toMatch(WRONG_PASSWORD);
  for (const h of apps) {
    const health = JSON.parse((await httpGet(h.address, '/health')).body) as Record<string, string>;
    expect(health).toMatchObject({ status: 'healthy', redis: 'ok', database: 'ok' });
  }
});
