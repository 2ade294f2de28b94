// Backups that leave the host, end to end on this file's own hosts: a database
// host (roles=db) and a backup host (roles=backup) on a private LAN, set up by
// one provision run. The daily backup's service pushes its copy; the push key,
// used as an attacker on the db host would, can do nothing but add a new copy;
// a copy that disagrees with its manifest is refused; a failed push alerts;
// the backup host prunes its copies by age; and with the database host gone,
// backup-verify restores the newest copy on a third host (the stand-in for the
// new database host of the "database server lost" runbook).
import {
  E2E_INDEX,
  E2E_PREFIX,
  outcome,
  ownHostSpecs,
  registerSecret,
  runBundle,
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
import { startReceiver, type Receiver } from '../support/alerts.js';

const APP = 'vault';
const DIR = `/var/backups/metalship/${APP}`;
const SPECS = ownHostSpecs('o', [64, 65, 66]);
const LAN = { tag: `of${E2E_INDEX}`, address: (n: number) => `10.218.${E2E_INDEX}.${n}` };
const DB_ADDRESS = LAN.address(1);
const BACKUP_ADDRESS = LAN.address(2);
const DB_PASSWORD = 'offsite-Db-Secret-4';
const TOKEN = 'offsite-alert-token-93c2';
const PUSH_DIR = `/etc/metalship/backup-push-${APP}`;
/** The push key as root on the db host holds it: the attacker's tool. */
const PUSH = `ssh -F /dev/null -i ${PUSH_DIR}/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=${PUSH_DIR}/known_hosts -l metalship-backup ${BACKUP_ADDRESS}`;

let key: HostKeyPair;
let db: TestHost;
let backup: TestHost;
let receiver: Receiver;

async function on(host: TestHost, command: string): Promise<string> {
  const r = await sshRun(host, key, command, { idleMs: 120000 });
  if (r.code !== 0)
    throw new Error(`'${command.slice(0, 120)}' failed on ${host.name} (${r.code}): ${r.stderr}`);
  return r.stdout;
}

async function attempt(host: TestHost, command: string): Promise<{ code: number; out: string; err: string }> {
  const r = await sshRun(host, key, command, { idleMs: 120000 });
  return { code: r.code, out: r.stdout, err: r.stderr };
}

/** The copies on the backup host: name, then sha256, a line each. */
const copies = () =>
  on(
    backup,
    `cd ${DIR} && for f in *; do [ -f "$f" ] && echo "$f $(sha256sum < "$f" | cut -c1-64)"; done; true`,
  );
const newestOnDb = async () =>
  (await on(db, `ls -1 ${DIR}/${APP}_*_daily.dump | sort | tail -n1 | xargs -n1 basename`))
    .trim()
    .replace(/\.dump$/, '');

function provisionInputs(): Record<string, string> {
  return {
    hosts: [
      `${db.address} roles=db private=${DB_ADDRESS}`,
      `${backup.address} roles=backup private=${BACKUP_ADDRESS}`,
    ].join('\n'),
    'ssh-key': key.privateKey,
    'known-hosts': [db.knownHosts, backup.knownHosts].join('\n'),
    app: APP,
    system: 'false',
    'ssh-hardening': 'false',
    redis: 'false',
    'db-password': DB_PASSWORD,
    'alert-webhook': `${receiver.base}/alert/${TOKEN}`,
  };
}

type Results = { host: string; items: { item: string; status: string; detail: string }[] }[];
const item = (r: BundleRun, host: TestHost, name: string) =>
  (JSON.parse(r.outputs.results!) as Results)
    .find((x) => x.host === host.address)!
    .items.find((i) => i.item === name)!;

beforeAll(async () => {
  registerSecret('the offsite database password', DB_PASSWORD);
  registerSecret('the offsite alert token', TOKEN);
  key = await ensureKey(`/run/metalship-e2e-offsite/${E2E_PREFIX}key`);
  await shutdownHosts(SPECS.map((h) => h.name));
  [db, backup] = (await bootHosts(
    SPECS.slice(0, 2).map((s, i) => ({ ...s, lan: `${LAN.tag}:${LAN.address(i + 1)}` })),
    key,
  )) as [TestHost, TestHost];
  // The backup host's own PostgreSQL (the image has it) is off: nothing there restores.
  await on(backup, 'systemctl disable --now --quiet postgresql; systemctl mask --quiet postgresql');
  receiver = await startReceiver(`10.213.${SPECS[0]!.index}.1`);
}, 300000);

afterAll(async () => {
  await receiver?.stop();
  if (!process.env.METALSHIP_KEEP_HOSTS) await shutdownHosts(SPECS.map((h) => h.name));
});

test('one provision run links the db host to the backup host: push key, pinned host key, restricted receiver', async () => {
  const r = await runBundle('provision', provisionInputs(), { idleMs: 400000 });
  expect(r.stdout).not.toMatch(/::error::/);
  expect(outcome(r)).toBe('succeeded');
  expect(item(r, db, 'offsite').status).toBe('changed');
  expect(item(r, backup, 'offsite').status).toBe('changed');
  for (const off of ['postgresql', 'app', 'nginx'])
    expect(item(r, backup, off).detail).toMatch(/roles=backup: no/);
  expect(await on(db, `stat -c '%a %U' ${PUSH_DIR} ${PUSH_DIR}/id_ed25519`)).toBe('700 root\n600 root\n');
  // The pinned key is the backup host's own, under the address the push connects to.
  const hostKey = (await on(backup, 'cut -d" " -f1,2 /etc/ssh/ssh_host_ed25519_key.pub')).trim();
  expect(await on(db, `cat ${PUSH_DIR}/known_hosts`)).toContain(`${BACKUP_ADDRESS} ${hostKey}`);
  const pub = (await on(db, `cut -d" " -f1,2 ${PUSH_DIR}/id_ed25519.pub`)).trim();
  expect(await on(backup, 'cat /var/lib/metalship-backup/.ssh/authorized_keys')).toContain(
    `restrict,from="${DB_ADDRESS}",command="/usr/local/sbin/metalship-backup-receive-${APP}" ${pub} `,
  );
  // The key, taken elsewhere (here: the backup host itself), is refused.
  const stolen = Buffer.from(await on(db, `cat ${PUSH_DIR}/id_ed25519`)).toString('base64');
  const elsewhere = await attempt(
    backup,
    `umask 077 && echo ${stolen} | base64 -d > /root/stolen && ssh -F /dev/null -i /root/stolen -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -l metalship-backup ${BACKUP_ADDRESS} 'put x' </dev/null; rc=$?; rm -f /root/stolen; exit $rc`,
  );
  expect(elsewhere.code).toBe(255);
  expect(elsewhere.err).toMatch(/Permission denied/);
  expect(await on(backup, `stat -c '%a %U' /var/lib/metalship-backup/.ssh/authorized_keys ${DIR}`)).toBe(
    '644 root\n700 metalship-backup\n',
  );
  // A second run changes nothing on either side.
  const again = await runBundle('provision', provisionInputs(), { idleMs: 400000 });
  expect(outcome(again)).toBe('succeeded');
  expect(item(again, db, 'offsite').status).toBe('ok');
  expect(item(again, backup, 'offsite').status).toBe('ok');
});

test("the timer's daily backup arrives on the backup host with its manifest, the same bytes", async () => {
  await on(
    db,
    `cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d ${APP} -c "CREATE TABLE items (id serial PRIMARY KEY, name text); INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 500) g;"`,
  );
  await on(db, `systemctl start metalship-backup-${APP}.service`);
  const base = await newestOnDb();
  const manifest = await on(db, `cat ${DIR}/${base}.manifest.json`);
  const { sha256 } = JSON.parse(manifest) as { sha256: string };
  expect(await copies()).toBe(
    `${base}.dump ${sha256}\n${base}.manifest.json ${(await on(db, `sha256sum < ${DIR}/${base}.manifest.json`)).slice(0, 64)}\n`,
  );
  expect(await on(backup, `stat -c '%a %U' ${DIR}/${base}.dump`)).toBe('600 metalship-backup\n');
  expect(await on(db, `journalctl -u metalship-backup-${APP}.service --no-pager -o cat`)).toContain(
    `${base} copied to ${BACKUP_ADDRESS}`,
  );
});

test('the push key, used as an attacker would, cannot run a shell, read a copy, replace one or add a bad one', async () => {
  const base = await newestOnDb();
  const before = await copies();
  const refused = async (command: string, code = 2) => {
    const r = await attempt(db, command);
    expect({ command, code: r.code, out: r.out }).toEqual({ command, code, out: '' });
    return r;
  };
  // A shell, a command, a terminal, sftp, reading a copy back, a path of its own.
  await refused(`${PUSH} </dev/null`);
  await refused(`${PUSH} id`);
  // No terminal either (restrict): ssh itself gives up.
  const tty = await attempt(db, `${PUSH} -tt 'bash -i' </dev/null`);
  expect({ code: tty.code, out: tty.out, err: tty.err }).toMatchObject({ code: 255, out: '' });
  expect(tty.err).toMatch(/PTY allocation request failed/);
  await refused(`${PUSH} -s sftp </dev/null`);
  await refused(`${PUSH} 'cat ${DIR}/${base}.dump'`);
  await refused(`${PUSH} 'get ${base}'`);
  await refused(`${PUSH} 'put ../${base}' </dev/null`);
  await refused(`${PUSH} 'put ${base}; id' </dev/null`);
  // No forwarding either: not to the backup host's own sshd.
  expect((await attempt(db, `${PUSH} -W 127.0.0.1:22 </dev/null`)).code).not.toBe(0);
  // The existing copy is never replaced, not even by a consistent pair.
  const r = await refused(
    `cd ${DIR} && { head -n1 ${base}.manifest.json; cat ${base}.dump; } | ${PUSH} 'put ${base}'`,
    3,
  );
  expect(r.err).toMatch(/is here already, with the same sha256: a copy is never replaced/);
  // Another dump under that name is a failure, not "exists": the push would fail and alert.
  const other = await refused(
    `cd ${DIR} && { sed 's/"sha256": "[^"]*"/"sha256": "${'0'.repeat(64)}"/' ${base}.manifest.json; cat ${base}.dump; } | ${PUSH} 'put ${base}'`,
    6,
  );
  expect(other.err).toMatch(/another file is under the name/);
  // A name of this database with the stamp and created of this moment, each line of it rewritten.
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const as = (name: string, created = now) =>
    `sed -e 's/"file": "[^"]*"/"file": "${name}.dump"/' -e 's/"created": "[^"]*"/"created": "${created}"/' ${base}.manifest.json`;
  // A dump that is not what its manifest says is refused on arrival, and nothing is left.
  const evil = `${APP}_${now.replace(/[-:]/g, '')}_daily`;
  const mismatch = await refused(
    `cd ${DIR} && { ${as(evil)}; { printf X; tail -c +2 ${base}.dump; }; } | ${PUSH} 'put ${evil}'`,
    4,
  );
  expect(mismatch.err).toMatch(/sha256 [0-9a-f]{64}, the manifest says/);
  // A self-consistent copy dated in the future, at an impossible time or under another label: refused.
  for (const [name, created] of [
    [`${APP}_20991231T000000Z_daily`, '2099-12-31T00:00:00Z'],
    [`${APP}_20261399T996199Z_daily`, '2026-13-99T99:61:99Z'],
  ] as const) {
    const forged = await refused(
      `cd ${DIR} && { ${as(name, created)}; cat ${base}.dump; } | ${PUSH} 'put ${name}'`,
      2,
    );
    expect(forged.err).toMatch(/ahead of this host's clock|is not a real UTC time/);
  }
  await refused(
    `cd ${DIR} && { ${as(`${APP}_x_forged`)}; cat ${base}.dump; } | ${PUSH} 'put ${evil.replace(/daily$/, 'forged')}'`,
  );
  // Its created not the stamp's, or more than the manifest's line: refused as not ours.
  await refused(
    `cd ${DIR} && { ${as(evil, '2099-12-31T00:00:00Z')}; cat ${base}.dump; } | ${PUSH} 'put ${evil}'`,
    4,
  );
  await refused(
    `cd ${DIR} && { ${as(evil)} | sed 's/}$/, "x": 1}/'; cat ${base}.dump; } | ${PUSH} 'put ${evil}'`,
    4,
  );
  expect(await copies()).toBe(before);
  expect(await on(backup, `ls -A ${DIR}`)).not.toMatch(/partial/);
});

test('a push that fails (the backup host presents another key) fails the daily backup, which alerts', async () => {
  const before = await copies();
  const from = receiver.received.length;
  try {
    // Another key under the backup host's address: no trust on first use, the push stops.
    await on(
      db,
      `cp ${PUSH_DIR}/known_hosts /root/kh.saved && echo "${BACKUP_ADDRESS} $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" > ${PUSH_DIR}/known_hosts`,
    );
    const r = await attempt(db, `systemctl start metalship-backup-${APP}.service`);
    expect(r.code).not.toBe(0);
    let alert;
    for (let i = 0; i < 300 && !alert; i++) {
      alert = receiver.alerts(from).find((a) => a.kind === 'backup');
      if (!alert) await on(db, 'sleep 0.2');
    }
    expect(alert).toMatchObject({ app: APP, kind: 'backup' });
    expect(await on(db, `journalctl -u metalship-backup-${APP}.service --no-pager -o cat -n 30`)).toMatch(
      /the copy to the backup host failed/,
    );
    expect(await copies()).toBe(before);
  } finally {
    await on(
      db,
      `mv /root/kh.saved ${PUSH_DIR}/known_hosts && systemctl reset-failed metalship-backup-${APP}.service`,
    );
  }
});

test('the backup host prunes its copies older than the retention, the newest always stays', async () => {
  const stamp = (daysAgo: number) =>
    new Date(Date.now() - daysAgo * 86400000)
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d+Z$/, 'Z');
  const old = `${APP}_${stamp(40)}_daily`;
  const recent = `${APP}_${stamp(2)}_daily`;
  // Planted by a receiver before this one: never a real time of the past, pruned.
  const future = `${APP}_20991231T000000Z_daily`;
  const invalid = `${APP}_20261399T996199Z_forged`;
  await on(
    backup,
    `cd ${DIR} && for b in ${old} ${recent} ${future} ${invalid}; do echo x > $b.dump; echo x > $b.manifest.json; chown metalship-backup: $b.*; chmod 600 $b.*; done`,
  );
  await on(db, 'sleep 1');
  await on(db, `systemctl start metalship-backup-${APP}.service`);
  const listing = await copies();
  expect(listing).not.toContain(old);
  expect(listing).not.toContain(future);
  expect(listing).not.toContain(invalid);
  expect(listing).toContain(`${recent}.dump`);
  expect(listing).toContain(`${await newestOnDb()}.dump`);
  expect(listing.match(/_daily\.dump /g)).toHaveLength(3);
  // The planted recent one is no backup: it goes again, by hand, before the restore test.
  await on(backup, `rm -f ${DIR}/${recent}.*`);
});

test('with the database host gone, backup-verify restores the newest copy from the backup host on another host', async () => {
  const newest = await newestOnDb();
  await shutdownHosts([SPECS[0]!.name]);
  // A copy is never restored on the backup host itself: no PostgreSQL of the app's there.
  const inPlace = await runBundle('backup-verify', {
    'ssh-key': key.privateKey,
    'known-hosts': backup.knownHosts,
    app: APP,
    'backup-host': backup.address,
    smoke: 'false',
  });
  expect(inPlace.code).toBe(1);
  expect(inPlace.stdout + inPlace.stderr).toMatch(/set restore-host to a host with PostgreSQL/);
  // The new database host: a fresh host with PostgreSQL.
  const [fresh] = (await bootHosts([SPECS[2]!], key)) as [TestHost];
  const started = Date.now();
  const r = await runBundle('backup-verify', {
    'ssh-key': key.privateKey,
    'known-hosts': [backup.knownHosts, fresh.knownHosts].join('\n'),
    app: APP,
    'backup-host': backup.address,
    'restore-host': fresh.address,
    smoke: 'false',
    checks: "SELECT count(*) = 500 FROM items\nSELECT bool_and(name LIKE 'item %') FROM items",
  });
  const wall = (Date.now() - started) / 1000;
  expect(r.stdout).not.toMatch(/::error::/);
  expect(outcome(r)).toBe('succeeded');
  expect(r.outputs['backup-file']).toBe(`${DIR}/${newest}.dump`);
  expect(r.outputs.rows).toBe('500');
  expect(r.summary).toMatch(/copied .* through the runner/);
  const record = JSON.parse(await on(backup, `cat /var/backups/metalship/.${APP}.last-verified.json`)) as {
    backup: string;
  };
  expect(record.backup).toBe(`${DIR}/${newest}.dump`);
  expect(await on(backup, `stat -c '%a %U' /var/backups/metalship/.${APP}.last-verified.json`)).toBe(
    '600 root\n',
  );
  // The runbook's step 3: the copy into the new host's production database, as provision would have made it.
  const restoreStarted = Date.now();
  // As the README gives it: logged in as the app's role (its password in root's ~/.pgpass), never as postgres.
  await on(
    fresh,
    `cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -c "CREATE ROLE ${APP} LOGIN PASSWORD '${DB_PASSWORD}'" -c "CREATE DATABASE ${APP} OWNER ${APP}" && umask 077 && echo '127.0.0.1:*:${APP}:${APP}:${DB_PASSWORD}' > /root/.pgpass`,
  );
  const dump = await on(backup, `cd / && runuser -u metalship-backup -- base64 -w0 ${DIR}/${newest}.dump`);
  const restored = await sshRun(
    fresh,
    key,
    `cd / && base64 -d | pg_restore --exit-on-error --no-owner --no-privileges -h 127.0.0.1 -U ${APP} -d ${APP}`,
    { input: dump, idleMs: 120000 },
  );
  expect(restored).toMatchObject({ code: 0, stderr: '' });
  expect(
    await on(
      fresh,
      `cd / && runuser -u postgres -- psql -XAtq -d ${APP} -c "SELECT count(*), pg_get_userbyid(relowner) FROM items, pg_class WHERE relname = 'items' GROUP BY 2"`,
    ),
  ).toBe(`500|${APP}\n`);
  const runbook = (Date.now() - restoreStarted) / 1000;
  process.stdout.write(
    `offsite restore: restore-seconds ${r.outputs['restore-seconds']}, backup-verify run ${wall.toFixed(1)} s, runbook restore ${runbook.toFixed(1)} s\n`,
  );
});
