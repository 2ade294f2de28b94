// Fleets as text: roles with load balancers, the balancer's upstream, the
// batches, and what provision does on a load balancer. The
// rolling deploy itself is tested on real hosts (test/e2e/fleet.test.ts).
import { execFileSync } from 'node:child_process';
import { provisionSettings } from '../../src/actions/provision.js';
import { parseHosts, type HostSpec } from '../../src/inputs/hosts.js';
import { parseInputs } from '../../src/inputs/parse.js';
import { balancerUpstreamConf } from '../../src/remote/balancer.js';
import { layout } from '../../src/remote/layout.js';
import { planItems } from '../../src/remote/provision/index.js';
import { bootLinks, standDownStep, switchScript, type SwitchSettings } from '../../src/remote/switch.js';
import { verifyStep } from '../../src/remote/verify.js';
import { lockOrder, resolveRoles, type Host } from '../../src/stages/hosts.js';
import { balancerMembers, batches } from '../../src/stages/rollout.js';
import { bashErrors } from '../support/bash.js';
import { FIXTURE_KEY } from '../support/keys.js';

const shopLayout = layout('shop', '/opt/shop');
const PRIVATE = FIXTURE_KEY;

const FLEET =
  'lb roles=lb\nweb1 roles=api,worker,scheduler,migrate upstream=10.1.0.1:8080\nweb2\nweb3 roles=worker';

function specs(text: string): HostSpec[] {
  const r = parseHosts(text);
  if (typeof r === 'string') throw new Error(r);
  return r;
}

/** Hosts as the stages see them, without connections (the functions tested here never use one). */
function hosts(text: string): Host[] {
  const s = specs(text);
  const roles = resolveRoles(s);
  return s.map((spec, i) => ({ spec, roles: roles[i]!, layout: shopLayout, conn: null as never }));
}

test('roles: a load balancer runs no app; hosts without roles run api and worker', () => {
  expect(resolveRoles(specs(FLEET))).toEqual([
    {
      api: false,
      worker: false,
      scheduler: false,
      migrate: false,
      lb: true,
      db: false,
      redis: false,
      backup: false,
    },
    {
      api: true,
      worker: true,
      scheduler: true,
      migrate: true,
      lb: false,
      db: false,
      redis: false,
      backup: false,
    },
    {
      api: true,
      worker: true,
      scheduler: false,
      migrate: false,
      lb: false,
      db: false,
      redis: false,
      backup: false,
    },
    {
      api: false,
      worker: true,
      scheduler: false,
      migrate: false,
      lb: false,
      db: false,
      redis: false,
      backup: false,
    },
  ]);
  // with only the balancer given a role, the first app host takes scheduler and migrations
  expect(resolveRoles(specs('lb roles=lb\nweb1\nweb2')).map((r) => r.scheduler)).toEqual([
    false,
    true,
    false,
  ]);
});

test('the balancer lists the api hosts at their upstream address', () => {
  const members = balancerMembers(hosts(FLEET).filter((h) => !h.roles.lb));
  expect(members).toEqual([
    { label: 'web1', host: '10.1.0.1', port: 8080 },
    { label: 'web2', host: 'web2', port: 80 },
  ]);
  const conf = balancerUpstreamConf(shopLayout, members);
  expect(conf).toContain('server 10.1.0.1:8080 max_fails=2 fail_timeout=1s; # web1\n');
  expect(conf).toContain('server web2:80 max_fails=2 fail_timeout=1s; # web2\n');
  expect(conf).toContain('upstream shop_fleet {');
  expect(balancerUpstreamConf(shopLayout, [{ label: 'v6', host: 'fd00::2', port: 80 }])).toContain(
    'server [fd00::2]:80 ',
  );
});

test('deploy locks are taken in one order whatever order hosts lists them in, so overlapping runs cannot each hold half', () => {
  const specs = parseHosts('web2.example.com, 10.0.0.5:2222, WEB1.example.com, 10.0.0.5') as HostSpec[];
  const order = (list: HostSpec[]) =>
    [...list]
      .map((spec) => ({ spec }))
      .sort((a, b) => lockOrder(a).localeCompare(lockOrder(b)))
      .map((h) => h.spec.label);
  expect(order(specs)).toEqual(['10.0.0.5', '10.0.0.5:2222', 'WEB1.example.com', 'web2.example.com']);
  expect(order([...specs].reverse())).toEqual(order(specs));
});

test('batches keep the host order', () => {
  expect(batches([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
  expect(batches([1, 2, 3], 5)).toEqual([[1, 2, 3]]);
});

test('provision on a load balancer: nginx in front of the api hosts, none of the app items', () => {
  const opts = parseInputs(
    'provision',
    (n) =>
      (
        ({
          hosts: 'lb roles=lb\nweb1',
          app: 'shop',
          'ssh-key': PRIVATE,
          'insecure-accept-any-host-key': 'true',
          'redis-password': 'redis-pw-1',
        }) as Record<string, string>
      )[n] ?? '',
  );
  const settings = provisionSettings(
    opts,
    { worker: false, scheduler: false },
    balancerMembers(hosts('web1').filter((h) => h.roles.api)),
  );
  const plan = planItems(settings, { os: 'Debian GNU/Linux 12 (bookworm)', id: 'debian', version: '12' });
  const off = plan.filter((p) => !p.item).map((p) => p.name);
  expect(off).toEqual(expect.arrayContaining(['python', 'app', 'postgresql', 'redis', 'logs', 'monitoring']));
  const nginx = plan.find((p) => p.name === 'nginx')!.item!.script;
  expect(nginx).toContain('/etc/nginx/conf.d/metalship-shop-balancer.conf');
  expect(nginx).toContain('proxy_pass http://shop_fleet;');
  expect(nginx).toContain('proxy_next_upstream error timeout http_502 http_503 http_504;');
  expect(nginx).not.toContain('metalship-shop-upstream.conf');
  for (const p of plan) if (p.item) expect(bashErrors(p.item.script)).toBe('');
  // with a domain, the TLS site the certificate brings proxies to the app hosts too
  const tls = planItems(
    { ...settings, tls: { ...settings.tls, domains: ['shop.example.com'], email: 'a@b.c' } },
    { os: 'Debian GNU/Linux 12 (bookworm)', id: 'debian', version: '12' },
  ).find((p) => p.name === 'tls')!.item!.script;
  expect(tls).toContain('ssl_certificate /etc/letsencrypt/live/shop.example.com/fullchain.pem;');
  expect(tls).toContain('proxy_pass http://shop_fleet;');
  expect(tls).not.toContain('proxy_pass http://shop_api;');
  // Alerts: nginx's failure, the disk and, where TLS ends here, the certificate; none of the app's units.
  const alerts = (extra: Partial<typeof settings>) =>
    planItems(
      { ...settings, alerts: { ...settings.alerts, webhook: 'https://hooks.example.com/x' }, ...extra },
      { os: 'Debian GNU/Linux 12 (bookworm)', id: 'debian', version: '12' },
    ).find((p) => p.name === 'alerts')!.item!.script;
  const lbAlerts = alerts({ tls: { ...settings.tls, domains: ['shop.example.com'], email: 'a@b.c' } });
  expect(lbAlerts).toContain('ms_file /etc/systemd/system/nginx.service.d/metalship-alert-shop.conf ');
  expect(lbAlerts).toContain('/etc/letsencrypt/live/shop.example.com/fullchain.pem');
  expect(lbAlerts).not.toMatch(
    /shop-api@\.service\.d|shop-worker\.service\.d|metalship-backup-shop\.service\.d/,
  );
  expect(bashErrors(lbAlerts)).toBe('');
  // Without nginx (nginx: false) there is none to alert on.
  expect(alerts({ nginx: { ...settings.nginx, enabled: false } })).toContain(
    'ms_apply rm -f /etc/systemd/system/nginx.service.d/metalship-alert-shop.conf',
  );
  // Without alert-webhook, nothing.
  expect(plan.find((p) => p.name === 'alerts')!.item!.script).toContain('no alerts');
});

/** A switch of the shop app on one host, as the tests below vary it. */
const SWITCH: SwitchSettings = {
  layout: shopLayout,
  releaseId: '20250101_000000',
  units: {},
  healthPath: '/health/ready',
  readyTimeout: 30,
  serverName: '_',
  worker: false,
  scheduler: false,
  record: '{}\n',
};

test('the worker and the scheduler restart counted from zero; without waiting when checks follow or when they are notify units (a wait would last until their READY=1)', () => {
  const settings = { ...SWITCH, worker: true, scheduler: true };
  const restarts = (s: SwitchSettings) =>
    switchScript(s)
      .split('\n')
      .filter((l) => /^(if ! )?systemctl (restart|reset-failed)/.test(l));
  for (const api of [true, false]) {
    const both = 'shop-worker@20250101_000000.service shop-scheduler.service';
    expect(restarts({ ...settings, api })).toEqual([
      `systemctl reset-failed ${both} 2>/dev/null || true`,
      `if ! systemctl restart ${both}; then echo "systemd could not start the worker or the scheduler: starting them again in a second"; sleep 1; systemctl restart ${both}; fi`,
    ]);
    for (const s of [{ checksFollow: true }, { notify: true }, { checksFollow: true, notify: true }])
      expect(restarts({ ...settings, api, ...s })).toEqual([
        `systemctl reset-failed ${both} 2>/dev/null || true`,
        `systemctl restart --no-block ${both}`,
      ]);
    // Every other release's worker is told to stop without the switch waiting: it finishes its job meanwhile.
    const text = switchScript({ ...settings, api });
    const start = text.indexOf(`systemctl restart ${both}`);
    const others = text.indexOf(
      "systemctl list-units --all --plain --no-legend --type=service 'shop-worker@*.service'",
    );
    expect(others).toBeGreaterThan(start);
    expect(text.slice(others)).toMatch(
      /^ {2}if \[ "\$u" != shop-worker@20250101_000000\.service \]; then systemctl stop --no-block "\$u"; fi$/m,
    );
    // The single worker unit of before goes, without waiting either; at boot only this release's worker starts.
    expect(text).toContain(
      'if [ -f /etc/systemd/system/shop-worker.service ]; then systemctl disable --no-reload --quiet shop-worker.service 2>/dev/null || true; systemctl stop --no-block shop-worker.service 2>/dev/null || true; rm -f /etc/systemd/system/shop-worker.service; units_removed=1; fi',
    );
    expect(text).toContain(
      `for f in /etc/systemd/system/shop.target.wants/shop-worker@*.service; do if [ -L "$f" ] && [ "\${f##*/}" != shop-worker@20250101_000000.service ]; then rm -f -- "$f"; fi; done`,
    );
    // The boot's link moves before the restart: a run cut short after current moved still boots this release's worker.
    const currentMoved = text.indexOf(
      api
        ? 'swap_link /opt/shop/releases/20250101_000000 /opt/shop/current'
        : 'mstool link /opt/shop/releases/20250101_000000 /opt/shop/current',
    );
    const link = text.indexOf(
      'ln -sfn /etc/systemd/system/shop-worker@.service /etc/systemd/system/shop.target.wants/shop-worker@20250101_000000.service',
    );
    expect(currentMoved).toBeGreaterThan(0);
    expect(link).toBeGreaterThan(currentMoved);
    expect(link).toBeLessThan(start);
    // At boot by their links alone (bootLinks), none by a systemctl call on the switch's path.
    expect(text).not.toMatch(/systemctl enable [^\n]*(shop\.target|shop-api@|shop-scheduler|shop-worker@)/);
    expect(text).not.toMatch(/systemctl disable --no-reload --quiet shop-api@/);
    expect(text).toContain(
      'ln -sfn /etc/systemd/system/shop-scheduler.service /etc/systemd/system/shop.target.wants/shop-scheduler.service',
    );
    expect(bashErrors(text)).toBe('');
  }
});

test('a host without the api role switches current and its followers only, and its check skips HTTP', () => {
  const settings = { ...SWITCH, worker: true };
  const workerOnly = switchScript({ ...settings, api: false });
  expect(bashErrors(workerOnly)).toBe('');
  const body = (text: string) => text.split('METALSHIP_EOF').slice(2).join('METALSHIP_EOF'); // without the python helper's source
  expect(body(workerOnly)).not.toMatch(/nginx|wait-ready|api\.sock/);
  expect(workerOnly).toContain(
    'systemctl disable --now --quiet shop-api@blue.service shop-api@green.service',
  );
  expect(workerOnly).toContain('systemctl restart shop-worker@20250101_000000.service');
  expect(body(switchScript(settings))).toContain('wait-ready');
  const check = {
    layout: shopLayout,
    path: '/health',
    timeout: 5,
    interval: 1,
    stableSeconds: 5,
    expectStatus: 200,
    expectBody: '',
  };
  const workerCheckScript = verifyStep({ ...check, units: [], worker: true, api: false }).script;
  expect(bashErrors(workerCheckScript)).toBe('');
  const workerCheck = body(workerCheckScript);
  expect(workerCheck).not.toContain('wait-ready');
  // The worker checked is the instance of the release current points at (or the single unit of before).
  expect(workerCheck).toContain(
    '  else units+=(shop-worker@"$(basename "$(readlink /opt/shop/current 2>/dev/null)" 2>/dev/null)".service); fi',
  );
  expect(body(verifyStep({ ...check, units: [] }).script)).toContain('wait-ready');
});

test("a deploy's checks run on the new slot's socket before the rename; a failure stops it, puts the unit files back and moves nothing", () => {
  const settings = {
    ...SWITCH,
    units: { 'shop-api@.service': '# Managed by metalship\n[Service]\nExecStart=/bin/true\n' },
    checksFollow: true,
  };
  const precheck = { path: '/version', expectStatus: 200, expectBody: 'v2', timeout: 5, interval: 0.5 };
  const text = switchScript({ ...settings, precheck });
  expect(bashErrors(text)).toBe('');
  const check = text.indexOf('wait-ready "$sock" /version 5 0.5 200 v2');
  const rename = text.indexOf('swap_link "$sock" /opt/shop/run/api.sock');
  expect(check).toBeGreaterThan(0);
  expect(rename).toBeGreaterThan(check);
  const failed = text.slice(check, text.indexOf('exit 3', check));
  expect(failed).toContain('restore_units');
  expect(failed).toContain('if [ "$slot" != "$active" ]; then systemctl stop');
  // a warm standby taking traffic back (a rollback) is checked after, not before
  expect(text).toMatch(/if \[ "\$warm" = 0 \]; then\n {2}echo "checking \/version/);
  expect(switchScript(settings)).not.toContain('wait-ready "$sock" /version');
});

test('units a release runs without are removed only once it serves', () => {
  const text = switchScript({
    ...SWITCH,
    units: { 'shop-api@.service': '# Managed by metalship\n', 'shop-worker.service': null },
  });
  expect(bashErrors(text)).toBe('');
  const rename = text.indexOf('swap_link "$sock" /opt/shop/run/api.sock');
  expect(text.indexOf('systemctl disable --now shop-worker.service')).toBeGreaterThan(rename);
});

test('a start-only switch stops before traffic moves, and its stand-down never stops the serving slot', () => {
  const settings = {
    ...SWITCH,
    units: { 'shop-api@.service': '# Managed by metalship\n' },
    worker: true,
    checksFollow: true,
    startOnly: true,
  };
  const text = switchScript(settings);
  expect(bashErrors(text)).toBe('');
  const started = text.indexOf('echo "STARTED"');
  expect(started).toBeGreaterThan(0);
  expect(text.indexOf('exit 0', started)).toBeLessThan(
    text.indexOf('swap_link "$sock" /opt/shop/run/api.sock'),
  );
  const down = standDownStep(shopLayout, '20250101_000000').script;
  expect(bashErrors(down)).toBe('');
  expect(down).toContain('if [ "$s" != "$active" ]');
  expect(down).toContain('/opt/shop/.metalship/units-before');
});

test('the boot starts what serves and nothing else of the app: the links systemctl enable makes, made directly', () => {
  const dir = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
  const sandbox = { ...shopLayout, unitDir: dir };
  const links = () =>
    execFileSync('bash', ['-c', `cd ${dir} && find . -type l -printf '%p -> %l\\n' | sort`], {
      encoding: 'utf8',
    });
  const run = (text: string) => execFileSync('bash', ['-euc', `slot=blue\n${text}`], { encoding: 'utf8' });
  try {
    execFileSync('bash', [
      '-c',
      `cd ${dir} && touch shop.target shop-api@.service shop-scheduler.service shop-worker@.service other.service && ` +
        // The last switch's: the green slot served, an older release's worker ran; another app's link stays.
        'mkdir shop.target.wants && ln -s ' +
        `${dir}/shop-api@.service shop.target.wants/shop-api@green.service && ln -s ${dir}/shop-worker@.service shop.target.wants/shop-worker@old.service && ` +
        `ln -s ${dir}/other.service shop.target.wants/other.service`,
    ]);
    const text = bootLinks(sandbox, {
      worker: 'shop-worker@new.service',
      api: true,
      scheduler: true,
      target: true,
    });
    run(text);
    const want = [
      `./multi-user.target.wants/shop.target -> ${dir}/shop.target`,
      `./shop.target.wants/other.service -> ${dir}/other.service`,
      `./shop.target.wants/shop-api@blue.service -> ${dir}/shop-api@.service`,
      `./shop.target.wants/shop-scheduler.service -> ${dir}/shop-scheduler.service`,
      `./shop.target.wants/shop-worker@new.service -> ${dir}/shop-worker@.service`,
      '',
    ].join('\n');
    expect(links()).toBe(want);
    // Run again: nothing changes, and no link is made anew (their inodes stay).
    const inodes = () =>
      execFileSync('bash', ['-c', `find ${dir} -type l -printf '%i %p\\n' | sort`], { encoding: 'utf8' });
    const before = inodes();
    run(text);
    expect(inodes()).toBe(before);
    // Taken out of service: no worker at boot; the rest is unserve's systemctl disable.
    run(bootLinks(sandbox, { worker: null }));
    expect(links()).not.toContain('shop-worker@');
  } finally {
    execFileSync('rm', ['-rf', dir]);
  }
});
