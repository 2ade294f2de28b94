// PostgreSQL password rotation on a host of this file's own, beyond the
// rotation under load of provision.test.ts: a refused run changes nothing on
// the host (the .env the app item would write included), a session opened with
// the old password before its removal keeps working after it, and a second
// app naming the first app's roles is refused before any change, its roles
// left working.
import { rm } from 'node:fs/promises';
import {
  outcome,
  ownHostSpecs,
  registerSecret,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  type BundleRun,
} from '../support/e2e.js';
import { E2E_PREFIX } from '../support/e2e.js';
import {
  bootHosts,
  ensureKey,
  shutdownHosts,
  sshRun,
  type HostKeyPair,
  type TestHost,
} from '../support/hosts.js';
import { startLoad, type LoadReport } from '../support/load.js';

const SPECS = ownHostSpecs('r', [80]);
const OLD = 'rot-Db-Secret-1';
const NEW = 'rot-Db-Secret-New-2';
const OTHER = 'rot-Db-Secret-Other-3';
const REDIS = 'rot-Redis-Secret-4';
const ENV = `DATABASE_URL=postgresql://shop:${OLD}@127.0.0.1/shop\nREDIS_URL=redis://shop:${REDIS}@127.0.0.1:6379/0\n`;
const ROTATED_ENV = ENV.replace(`postgresql://shop:${OLD}@`, `postgresql://shop_b:${NEW}@`);

let key: HostKeyPair;
let host: TestHost;
let source: string;

async function on(command: string): Promise<string> {
  const r = await sshRun(host, key, command, { idleMs: 120000 });
  if (r.code !== 0) throw new Error(`'${command.slice(0, 120)}' failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

function conn(): Record<string, string> {
  return { hosts: host.address, 'ssh-key': key.privateKey, 'known-hosts': host.knownHosts };
}

function inputs(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...conn(),
    app: 'shop',
    // no apt mirror reachable from a test host; the full image has the packages
    system: 'false',
    'ssh-hardening': 'false',
    'worker-command': 'python -m worker',
    'scheduler-command': 'python -m scheduler',
    env: ENV,
    'db-password': OLD,
    'redis-password': REDIS,
    ...extra,
  };
}

function items(r: BundleRun): Record<string, { status: string; detail: string }> {
  const res = JSON.parse(r.outputs.results!) as {
    items?: { item: string; status: string; detail: string }[];
  }[];
  return Object.fromEntries((res[0]!.items ?? []).map((i) => [i.item, i]));
}

const pgLogin = async (user: string, password: string) =>
  (
    await on(
      `PGPASSWORD='${password}' psql -XAtq -h 127.0.0.1 -U ${user} -d shop -c 'select current_user, session_user' 2>&1 || true`,
    )
  ).trim();
/** What a refusal must leave as it was: the .env's bytes and mtime, and the roles with their passwords and comments. */
const state = () =>
  on(
    "sha256sum /opt/shop/.env; stat -c '%Y.%y %s %U %a' /opt/shop/.env; " +
      `runuser -u postgres -- psql -XAtq -c "select rolname, rolpassword, shobj_description(oid, 'pg_authid') from pg_authid where rolname like 'shop%' order by 1"`,
  );

beforeAll(async () => {
  for (const [what, value] of [
    ['the rotation file database password', OLD],
    ['the rotated database password', NEW],
    ["the other app's database password", OTHER],
    ['the rotation file Redis password', REDIS],
  ] as const)
    registerSecret(what, value);
  key = await ensureKey(`/run/metalship-e2e-pg-rotation/${E2E_PREFIX}key`);
  await shutdownHosts(SPECS.map((h) => h.name));
  host = (await bootHosts(SPECS, key))[0]!;
  source = await sampleAppCopy('pgrot');
  const p = await runBundle('provision', inputs(), { idleMs: 400000 });
  expect(outcome(p)).toBe('succeeded');
  const d = await runBundle('deploy', { ...conn(), ...sampleAppInputs('shop', source), migrate: 'true' });
  expect(outcome(d)).toBe('succeeded');
}, 900000);

afterAll(async () => {
  await shutdownHosts(SPECS.map((h) => h.name));
  if (source) await rm(source, { recursive: true, force: true });
});

test('a refused rotation changes nothing on the host: the .env the app item comes first to write stays byte for byte, with its mtime', async () => {
  const before = await state();
  // A new env and a new login role without keeping the old password, which the release uses: refused.
  const r = await runBundle(
    'provision',
    inputs({ env: ROTATED_ENV, 'db-password': NEW, 'db-login-user': 'shop_b' }),
  );
  expect(r.code).toBe(1);
  expect(items(r).postgresql!.status).toBe('failed');
  expect(items(r).postgresql!.detail).toMatch(
    /logs in to PostgreSQL as shop, whose password this run takes away.*Nothing was changed/,
  );
  // No item ran: the refusal was decided before the first change.
  expect(items(r).app).toBeUndefined();
  expect(await state()).toBe(before);
  expect(await pgLogin('shop', OLD)).toBe('shop|shop');
});

test('a session opened with the old password before its removal still runs queries after it', async () => {
  const load = startLoad(`http://${host.address}/health`, { workers: 2, pauseMs: 20 });
  let report: LoadReport;
  try {
    // Opened as shop with the old password; its second query waits for /run/ms-go.
    await on('rm -f /run/ms-go /run/ms-held.out');
    await on(
      `nohup setsid sh -c '(echo "select 1;"; until [ -e /run/ms-go ]; do sleep .2; done; echo "select current_user, session_user, 42;") | PGPASSWORD=${OLD} psql -XAt -h 127.0.0.1 -U shop -d shop > /run/ms-held.out 2>&1' >/dev/null 2>&1 &`,
    );
    for (let i = 0; i < 50 && !(await on('cat /run/ms-held.out 2>/dev/null || true')).includes('1'); i++)
      await new Promise((res) => setTimeout(res, 200));
    expect((await on('cat /run/ms-held.out')).trim()).toBe('1');

    const add = await runBundle(
      'provision',
      inputs({ env: ROTATED_ENV, 'db-password': NEW, 'db-login-user': 'shop_b', 'db-previous-user': 'shop' }),
    );
    expect(outcome(add)).toBe('succeeded');
    const deploy = await runBundle('deploy', {
      ...conn(),
      ...sampleAppInputs('shop', source),
      migrate: 'true',
    });
    expect(outcome(deploy)).toBe('succeeded');
    const remove = await runBundle(
      'provision',
      inputs({ env: ROTATED_ENV, 'db-password': NEW, 'db-login-user': 'shop_b' }),
    );
    expect(outcome(remove)).toBe('succeeded');
    expect(items(remove).postgresql!.detail).toContain('password of role shop removed');
    expect(items(remove).postgresql!.detail).toMatch(/\d+ sessions are still connected as shop\b/);
    expect(await pgLogin('shop', OLD)).toMatch(/password authentication failed for user "shop"/);
    // A pooler's reset (PgBouncer's server_reset_query, DISCARD ALL) keeps the owner; SET ROLE NONE leaves it (see the design notes).
    expect(
      (
        await on(
          `PGPASSWORD='${NEW}' psql -XAtq -h 127.0.0.1 -U shop_b -d shop -c 'discard all' -c 'select current_user'`,
        )
      ).trim(),
    ).toBe('shop');
    expect(
      (
        await on(
          `PGPASSWORD='${NEW}' psql -XAtq -h 127.0.0.1 -U shop_b -d shop -c 'set role none' -c 'select current_user'`,
        )
      ).trim(),
    ).toBe('shop_b');

    await on('touch /run/ms-go');
    let held = '';
    for (let i = 0; i < 50 && !held.includes('42'); i++) {
      await new Promise((res) => setTimeout(res, 200));
      held = await on('cat /run/ms-held.out');
    }
    expect(held.trim().split('\n')).toEqual(['1', 'shop|shop|42']);
  } finally {
    report = await load.stop();
  }
  expect(report.requests).toBeGreaterThan(0);
  expect(report.failures).toEqual({});
});

test("a second app naming the first app's owner or login role, or using its Redis, is refused before any change, naming the input and the app; the first app's logins keep working", async () => {
  const other = (extra: Record<string, string>) =>
    inputs({
      app: 'shop2',
      'db-name': 'shop2',
      'db-password': OTHER,
      env: `DATABASE_URL=postgresql://shop2:${OTHER}@127.0.0.1/shop2\n`,
      redis: 'false',
      ...extra,
    });
  const before = await state();
  // The same owner: a rotation of shop2 would take shop_b's password away.
  const owner = await runBundle('provision', other({ 'db-user': 'shop', 'db-login-user': 'shop_c' }));
  expect(owner.code).toBe(1);
  expect(items(owner).postgresql!.detail).toMatch(
    /Input 'db-user' names role shop, whose passwords provision manages for the app shop: .*choose another db-user for shop2\. Nothing was changed\./,
  );
  // Its own owner, but the first app's login role.
  const login = await runBundle('provision', other({ 'db-user': 'shop2', 'db-login-user': 'shop_b' }));
  expect(login.code).toBe(1);
  expect(items(login).postgresql!.detail).toMatch(
    /Input 'db-login-user' names role shop_b, whose passwords provision manages for the app shop: .*Nothing was changed\./,
  );
  // Its own roles, but Redis on this host: its ACL file holds the first app's user.
  const cache = await runBundle(
    'provision',
    other({
      'db-user': 'shop2',
      redis: 'true',
      'redis-user': 'shop2',
      'redis-password': 'rot-Redis-Other-5',
      env: `DATABASE_URL=postgresql://shop2:${OTHER}@127.0.0.1/shop2\nREDIS_URL=redis://shop2:rot-Redis-Other-5@127.0.0.1:6379/0\n`,
    }),
  );
  expect(cache.code).toBe(1);
  expect(items(cache).redis!.detail).toMatch(
    /Redis on this host serves the app shop: its ACL file holds that app's users, and provisioning shop2 would replace them\..*Nothing was changed\./,
  );
  expect(await on(`cat /etc/redis/users.acl | grep -c '^user shop '`)).toBe('1\n');
  expect(await state()).toBe(before);
  // Only the deploy lock's directory (taken before the pre-checks): no user, no .env.
  expect(await on('id -u shop2 >/dev/null 2>&1 && echo user || echo none; ls -A /opt/shop2')).toBe(
    'none\n.metalship\n',
  );
  expect(await pgLogin('shop_b', NEW)).toBe('shop|shop_b');
  // The first app's own runs are unaffected.
  const again = await runBundle(
    'provision',
    inputs({ env: ROTATED_ENV, 'db-password': NEW, 'db-login-user': 'shop_b' }),
  );
  expect(outcome(again)).toBe('succeeded');
  expect(items(again).postgresql!.status).toBe('ok');
});

test('nginx is never left refusing its configuration by a second app: a second default server is refused before any change, and a site nginx -t refuses is taken back', async () => {
  const other = (extra: Record<string, string>) =>
    inputs({
      app: 'shop2',
      'db-user': 'shop2',
      'db-name': 'shop2',
      'db-password': OTHER,
      env: `DATABASE_URL=postgresql://shop2:${OTHER}@127.0.0.1/shop2\n`,
      redis: 'false',
      ...extra,
    });
  const nginxState = () =>
    on(
      'ls /etc/nginx/sites-enabled /etc/nginx/conf.d; sha256sum /etc/nginx/sites-enabled/* /etc/nginx/conf.d/*; nginx -t 2>&1',
    );
  const before = await nginxState();
  // No domains: its site would be a second default server beside shop's.
  const second = await runBundle('provision', other({}));
  expect(second.code).toBe(1);
  expect(items(second).nginx!.detail).toMatch(
    /another site already is the default server on port 80 \(\/etc\/nginx\/sites-enabled\/shop\)\. This app has neither domains nor a server-name.*Nothing was changed\./,
  );
  expect(await on('id -u shop2 >/dev/null 2>&1 && echo user || echo none')).toBe('none\n');
  expect(await nginxState()).toBe(before);

  // With its own name, but a leftover of another setup defines its upstream:
  // nginx -t refuses only once its files are in, and they go again.
  await on(
    "printf 'upstream shop2_api { server 127.0.0.1:9; }\\n' > /etc/nginx/conf.d/zz-leftover.conf && nginx -t 2>/dev/null",
  );
  try {
    const withLeftover = await nginxState();
    const refused = await runBundle(
      'provision',
      other({ domains: 'shop2.example.test', 'acme-email': 'ops@example.test' }),
      { idleMs: 400000 },
    );
    expect(refused.code).toBe(1);
    expect(items(refused).nginx!.detail).toContain("this app's nginx files are back as they were");
    expect(items(refused).nginx!.detail).toMatch(/duplicate upstream "shop2_api"/);
    expect(await nginxState()).toBe(withLeftover);
    expect(await on('ls /etc/nginx/sites-available')).not.toContain('shop2');
    // shop is served as before, nginx reloads cleanly.
    expect(
      await on(
        'systemctl reload nginx && curl -s -o /dev/null -w "%{http_code}" http://127.0.0.1/health/ready',
      ),
    ).toBe('200');
  } finally {
    await on('rm -f /etc/nginx/conf.d/zz-leftover.conf');
  }
});

test('a stopped PostgreSQL is refused before any change: its roles are not judged after the run has started it', async () => {
  const before = await state();
  // systemctl waits for postgresql.service, not for the cluster its stop propagates to.
  await on(
    'systemctl stop postgresql; for _ in $(seq 1 60); do pg_lsclusters -h | grep -q online || break; sleep 0.5; done',
  );
  try {
    const r = await runBundle(
      'provision',
      inputs({ env: ROTATED_ENV, 'db-password': NEW, 'db-login-user': 'shop_b' }),
    );
    expect(r.code).toBe(1);
    expect(items(r).postgresql!.detail).toMatch(
      /PostgreSQL is installed on this host but does not answer \(.*\d+ +main.*down.*\)\..*start it first .*Nothing was changed\./,
    );
    expect(await on('systemctl is-active postgresql || true')).toBe('inactive\n');
  } finally {
    await on('systemctl start postgresql');
  }
  expect(await state()).toBe(before);
});
