// Every file metalship generates, built from hostile but valid settings and read
// back the way its own program reads it (test/support/systemd.ts, nginx.ts,
// confs.ts): what the file says must be exactly what was given. "Valid" is what
// the inputs' own schemas accept (src/inputs): every value goes through its
// input first, and the values sit at the edges of what those allow.

import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { provisionSettings } from '../../src/actions/provision.js';
import { connectionInputs, serviceInputs } from '../../src/inputs/definitions.js';
import type { Field } from '../../src/inputs/fields.js';
import { parseHosts } from '../../src/inputs/hosts.js';
import { parseInputs } from '../../src/inputs/parse.js';
import { provisionInputs } from '../../src/inputs/provision.js';
import { alertPaths, alertProgram, alertUnits, curlConfig, onFailureDropIn } from '../../src/remote/alert.js';
import { backupProgram, backupProgramPath, unitFiles as backupUnitFiles } from '../../src/remote/backup.js';
import { balancerUpstreamConf, balancerUpstreamName } from '../../src/remote/balancer.js';
import { layout, type Layout } from '../../src/remote/layout.js';
import { ACME_WEBROOT, siteConf, upstreamConf, upstreamName } from '../../src/remote/nginx.js';
import { JOURNALD_CONF, logrotateConf, nginxLogrotateConf } from '../../src/remote/provision/logs.js';
import { CURL, nodeExporterDefaults, pingUnits } from '../../src/remote/provision/monitoring.js';
import { hbaBlock } from '../../src/remote/provision/postgresql.js';
import { aclFile, REDIS_ACL, REDIS_DROPIN, redisBind, redisItem } from '../../src/remote/provision/redis.js';
import type { ProvisionSettings } from '../../src/remote/provision/settings.js';
import { quote } from '../../src/remote/sh.js';
import { sshdDropIn, sshdOptions } from '../../src/remote/provision/ssh.js';
import { sudoersRule } from '../../src/remote/provision/users.js';
import { unitFiles } from '../../src/remote/units.js';
import {
  parseAclFile,
  parseHba,
  parseLogrotate,
  parseRedisConf,
  parseSshdConfig,
  parseSudoers,
} from '../support/confs.js';
import { findAll, hasVariable, parseNginx, type Directive } from '../support/nginx.js';
import {
  environmentValue,
  execValue,
  listValue,
  parseUnit,
  resolveSpecifiers,
  value,
  values,
  type Specifiers,
  type UnitEntry,
} from '../support/systemd.js';
import { FIXTURE_KEY } from '../support/keys.js';

/** A value for a test's name: long ones by their length. */
const short = (v: string) => (v.length > 40 ? `${v.slice(0, 12)}... (${v.length} characters)` : v);

/** The value as its input accepts it: the input's own schema is the definition of valid. */
function valid<T>(field: Field<T>, raw: string): T {
  const r = field.schema.safeParse(raw);
  if (!r.success) throw new Error(`${JSON.stringify(raw)} is not valid: ${r.error.issues[0]?.message}`);
  return r.data;
}

const KEY_B64 = 'AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl';

/** Provision settings from raw inputs, through the whole input layer. */
function provision(inputs: Record<string, string>): ProvisionSettings {
  const raw: Record<string, string> = {
    hosts: '10.0.0.5',
    app: 'shop',
    'ssh-key': FIXTURE_KEY,
    'known-hosts': `10.0.0.5 ssh-ed25519 ${KEY_B64}`,
    'redis-password': 'redis-pw-0123',
    ...inputs,
  };
  return provisionSettings(
    parseInputs('provision', (n) => raw[n]),
    { worker: true, scheduler: true },
  );
}

/** The specifiers systemd would resolve in a unit of that name (sentinels where the host decides). */
function specifiers(unit: string, instance?: string): Specifiers {
  return {
    n: unit,
    N: unit.replace(/\.[a-z]+$/, ''),
    p: unit.replace(/(@.*)?\.[a-z]+$/, ''),
    h: '/SPECIFIER-h',
    u: 'SPECIFIER-u',
    H: 'SPECIFIER-H',
    t: '/run',
    ...(instance ? { i: instance, I: instance } : {}),
  };
}

/** Runs bash on a script and returns its output. */
function bash(script: string): string {
  return execFileSync('bash', ['-c', script], { encoding: 'utf8' });
}

const SYSTEMD_ANALYZE = !spawnSync('systemd-analyze', ['--version']).error;

/**
 * A cross-check with the real parser where this machine has it: systemd-analyze
 * verify loads each unit (a template as its blue instance) and must report
 * nothing but programs that do not exist here.
 */
function verifyUnits(files: Record<string, string | null>): void {
  if (!SYSTEMD_ANALYZE) return;
  const dir = mkdtempSync(join(tmpdir(), 'metalship-units-'));
  try {
    const names = Object.entries(files).flatMap(([name, content]) => {
      if (content === null) return [];
      const file = join(dir, name.replace('@.', '@blue.'));
      writeFileSync(file, content);
      return [file];
    });
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', '--generators=no', ...names], {
      encoding: 'utf8',
    });
    const problems = `${r.stdout}${r.stderr}`
      .split('\n')
      .filter((line) => line && !/: Command \S+ is not executable: No such file or directory$/.test(line));
    expect(problems).toEqual([]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The argv of every command of every ExecStart=, in order (none has a prefix such as - or +). */
function execs(unit: UnitEntry[], spec: Specifiers, env: Record<string, string> = {}): string[][] {
  const argvs = values(unit, 'Service', 'ExecStart').flatMap((v) => execValue(v, spec, env));
  for (const c of argvs) expect(c.prefixes).toBe('');
  return argvs.map((c) => c.argv);
}

// Apps at the edges of the app and app-root inputs: the longest name, a root
// with dots, dashes and 250 characters (braces are refused by the input: see logrotate).
const APPS: [label: string, app: string, root: string][] = [
  ['shop in /opt/shop', 'shop', '/opt/shop'],
  ['32-character app, 250-character root', 'x-' + '9'.repeat(29) + 'z', `/srv/a.b-c_d/-e/${'r'.repeat(200)}`],
];
const app = (name: string, root: string): Layout =>
  layout(valid(connectionInputs.app, name), valid(connectionInputs['app-root'], root));

describe('systemd units of the app (units.ts): the exact argv systemd runs', () => {
  // Celery's own %h and %n/%I placeholders, braces, a bare %, a doubled %%.
  const worker = valid(
    serviceInputs['worker-command'],
    'celery -A proj.app worker -n w1@%h --logfile=/var/log/%n%I.log --x={a,b} 100% %%',
  );
  const scheduler = valid(serviceInputs['scheduler-command'], '/usr/bin/python3 -m sched --fmt=%i:%p a=b');
  const uvicornArgs = valid(
    serviceInputs['uvicorn-args'],
    '--root-path /api%2Fv1 --header x-a:{b} --workers 2',
  );
  const appModule = valid(serviceInputs['app-module'], 'pkg_1.sub.mod:app_factory.x');
  const user = valid(serviceInputs['app-user'], '_u-1');
  // What the release's uvicorn.env sets, split into words where the unit says $METALSHIP_UVICORN_FLAGS.
  const env = { METALSHIP_UVICORN_FLAGS: '--timeout-graceful-shutdown 30 --no-server-header' };

  test.each(APPS)('%s', (_label, name, root) => {
    const layout = app(name, root);
    const files = unitFiles(
      {
        layout: layout,
        user,
        appModule,
        uvicornArgs,
        workerCommand: worker,
        schedulerCommand: scheduler,
        unitsReady: 'stable',
      },
      { worker: true, scheduler: true },
    );
    const slot = `${layout.slots}/blue`;

    const api = parseUnit(files[layout.units.apiTemplate]!);
    const apiSpec = specifiers(layout.units.api('blue'), 'blue');
    expect(execs(api, apiSpec, env)).toEqual([
      [
        `${slot}/.venv/bin/python`,
        '-m',
        'uvicorn',
        appModule,
        '--uds',
        `/run/${name}-api-blue/api.sock`,
        '--timeout-keep-alive',
        '75',
        '--timeout-graceful-shutdown',
        '30',
        '--no-server-header',
        ...uvicornArgs,
      ],
    ]);
    expect(resolveSpecifiers(value(api, 'Service', 'WorkingDirectory'), apiSpec)).toBe(slot);
    expect(values(api, 'Service', 'EnvironmentFile').map((v) => resolveSpecifiers(v, apiSpec))).toEqual([
      `-${slot}/.env`,
      `-${slot}/.metalship/uvicorn.env`,
    ]);
    expect(
      Object.assign({}, ...values(api, 'Service', 'Environment').map((v) => environmentValue(v, apiSpec))),
    ).toEqual({
      PATH: `${slot}/.venv/bin:/usr/local/bin:/usr/bin:/bin`,
      PYTHONUNBUFFERED: '1',
      APP_NAME: name,
    });
    expect(listValue(value(api, 'Service', 'ReadWritePaths'), apiSpec)).toEqual([layout.shared]);
    expect(listValue(value(api, 'Service', 'RuntimeDirectory'), apiSpec)).toEqual([`${name}-api-blue`]);
    expect(resolveSpecifiers(value(api, 'Service', 'User'), apiSpec)).toBe(user);
    // Their output goes to the app's journal namespace (journald@{app}.conf keeps it 30 days).
    expect(resolveSpecifiers(value(api, 'Service', 'LogNamespace'), apiSpec)).toBe(layout.journalNamespace);
    expect(resolveSpecifiers(value(api, 'Unit', 'Description'), apiSpec)).toBe(`${name} API (blue slot)`);
    expect(listValue(value(api, 'Install', 'WantedBy'), apiSpec)).toEqual([layout.units.target]);

    // The worker: an instance per release, run from that release; the scheduler from current.
    const releaseId = '20261202_010203';
    for (const [unit, spec, command, dir] of [
      [
        layout.units.workerTemplate,
        specifiers(layout.units.worker(releaseId), releaseId),
        worker,
        layout.release(releaseId),
      ],
      [layout.units.scheduler, specifiers(layout.units.scheduler), scheduler, layout.current],
    ] as const) {
      const parsed = parseUnit(files[unit]!);
      const [program, ...args] = command;
      expect(execs(parsed, spec)).toEqual([
        [program!.startsWith('/') ? program! : `${dir}/.venv/bin/${program}`, ...args],
      ]);
      expect(resolveSpecifiers(value(parsed, 'Service', 'WorkingDirectory'), spec)).toBe(dir);
      expect(values(parsed, 'Service', 'EnvironmentFile').map((v) => resolveSpecifiers(v, spec))).toEqual([
        `-${dir}/.env`,
      ]);
      expect(resolveSpecifiers(value(parsed, 'Service', 'LogNamespace'), spec)).toBe(name);
      expect(environmentValue(values(parsed, 'Service', 'Environment')[0]!, spec)).toEqual({
        PATH: `${dir}/.venv/bin:/usr/local/bin:/usr/bin:/bin`,
      });
    }
    expect(
      resolveSpecifiers(
        value(parseUnit(files[layout.units.workerTemplate]!), 'Unit', 'Description'),
        specifiers(layout.units.worker(releaseId), releaseId),
      ),
    ).toBe(`${name} worker (release ${releaseId})`);
    verifyUnits(files);
    expect(parseUnit(files[layout.units.target]!)).toEqual([
      { section: 'Unit', key: 'Description', value: `${name} (all services)` },
      { section: 'Install', key: 'WantedBy', value: 'multi-user.target' },
    ]);
  });
});

describe('health ping (monitoring.ts): the URLs reach curl as given, nothing reaches a shell', () => {
  // Valid paths at the edges of the health-ping-path input: & ; ? = % ~ and a 255-character path.
  const PATHS = [
    '/ok&/path/prog',
    '/health?a=1&b=2',
    '/h%2Fready%25?q=%h%i&x=%%',
    '/~u/../a=b',
    '/' + 'a'.repeat(254),
  ];
  // Ping URLs as the health-ping-url input normalises them: $ ; { } [ ] | ` \ ' " and % that is not an escape.
  const URLS = [
    'https://hc.example.com/ping/abc?x=%41&y=$HOME;z={a,b}[1-2]|`id`\\w#it\'s "q" %zz',
    'http://[::1]:8080/p%h?a=%i',
  ];
  const cases = PATHS.flatMap((p) => URLS.map((u, i) => [short(p), i, p, u] as const));
  // (curl's options are the unit's own, CURL: what matters here is where the URLs land.)

  test.each(cases)('health-ping-path %s, ping URL %i', (_label, _i, path, url) => {
    const settings = provision({ 'health-ping-path': path, 'health-ping-url': url });
    const ping = valid(provisionInputs['health-ping-url'], url);
    const unit = `metalship-shop-ping.service`;
    const parsed = parseUnit(pingUnits(settings).service);
    expect(execs(parsed, specifiers(unit))).toEqual([
      [...CURL, '--unix-socket', settings.layout.apiLink, '--url', `http://localhost${path}`],
      [...CURL, '--retry', '3', '--url', ping],
    ]);
    expect(resolveSpecifiers(value(parsed, 'Service', 'User'), specifiers(unit))).toBe('shop');
    expect(value(parsed, 'Service', 'Type')).toBe('oneshot');
    verifyUnits({
      [unit]: pingUnits(settings).service,
      'metalship-shop-ping.timer': pingUnits(settings).timer,
    });
  });
});

/** The directives of each server block: name -> args of each occurrence. */
function servers(tree: Directive[]): Directive[][] {
  return findAll(tree, 'server').map((d) => d.block!);
}
const args = (block: Directive[], name: string) => block.filter((d) => d.name === name).map((d) => d.args);

describe('nginx (nginx.ts, balancer.ts): server names, paths and upstreams parse as given', () => {
  // server-name at its edges: wildcards, a leading dot, a leading dash, 63-character labels.
  const SERVER_NAMES = [
    '_',
    `shop.example.com *.example.com www.example.* .example.org -x.${'a'.repeat(63)}.example`,
  ];
  const STATIC = valid(provisionInputs['static-dir'], `/srv/a.b/-x_y/${'s'.repeat(150)}/static/`);

  test.each(APPS.flatMap(([label, n, r]) => SERVER_NAMES.map((sn, i) => [label, i, n, r, sn] as const)))(
    'site and upstream: %s, server names %i',
    (_label, _i, name, root, serverName) => {
      const layout = app(name, root);
      const names = valid(serviceInputs['server-name'], serverName).split(' ');
      const upstream = parseNginx(upstreamConf(layout));
      expect(findAll(upstream, 'upstream').map((d) => d.args)).toEqual([[upstreamName(layout)]]);
      expect(findAll(upstream, 'server').map((d) => d.args)).toEqual([
        [`unix:${layout.apiLink}`, 'max_fails=0'],
      ]);

      const tls = { certificate: '/etc/letsencrypt/live/a.example/fullchain.pem', key: '/k/privkey.pem' };
      for (const t of [null, tls]) {
        const tree = parseNginx(
          siteConf(layout, {
            serverName,
            tls: t,
            staticDir: STATIC,
            acmeWebroot: ACME_WEBROOT,
            logDir: layout.nginxLogs,
          }),
        );
        for (const block of servers(tree)) {
          expect(args(block, 'server_name')).toEqual([names]);
          // Every server block of the site logs to the app's own files.
          expect(args(block, 'access_log')).toEqual([[`/var/log/nginx/${name}/access.log`]]);
          expect(args(block, 'error_log')).toEqual([[`/var/log/nginx/${name}/error.log`]]);
        }
        const aliases = findAll(tree, 'alias').map((d) => d.args);
        expect(aliases).toEqual([[`${STATIC}/`]]);
        expect(findAll(tree, 'root').map((d) => d.args)).toEqual([[ACME_WEBROOT]]);
        expect(findAll(tree, 'proxy_pass').map((d) => d.args)).toEqual([[`http://${upstreamName(layout)}`]]);
        for (const a of [...aliases.flat(), ...findAll(tree, 'root').flatMap((d) => d.args)])
          expect(hasVariable(a)).toBe(false);
        if (t) {
          expect(findAll(tree, 'ssl_certificate').map((d) => d.args)).toEqual([[tls.certificate]]);
          expect(findAll(tree, 'ssl_certificate_key').map((d) => d.args)).toEqual([[tls.key]]);
        }
      }
    },
  );

  test('provision: the domains become the server_name list', () => {
    const domains = `shop.example.com, ${'a'.repeat(63)}.${'b'.repeat(63)}.example, xn--bcher-kva.example`;
    const settings = provision({ domains, 'acme-email': 'a+b@example.com', 'app-root': '/srv/a-b.c/{app}' });
    const tree = parseNginx(
      siteConf(settings.layout, { serverName: settings.tls.domains.join(' '), tls: null }),
    );
    expect(servers(tree).map((b) => args(b, 'server_name'))).toEqual([
      [valid(provisionInputs.domains, domains)],
    ]);
  });

  test('balancer: every app host is one upstream server at its address', () => {
    const hosts = parseHosts(
      [
        'lb.example.com roles=lb',
        '[fd00::1]:2222 upstream=[fd00::11]:8080',
        `web-1.${'h'.repeat(63)}.example upstream=10.0.1.12`,
        '10.0.0.9',
        'deploy@[2001:db8::7]',
      ].join('\n'),
    );
    if (typeof hosts === 'string') throw new Error(hosts);
    const members = hosts
      .filter((h) => !h.roles.includes('lb'))
      .map((h) => ({ label: h.label, ...(h.upstream ?? { host: h.host, port: 80 }) }));
    const layout = app(APPS[1]![1], APPS[1]![2]);
    const tree = parseNginx(balancerUpstreamConf(layout, members));
    expect(findAll(tree, 'upstream').map((d) => d.args)).toEqual([[balancerUpstreamName(layout)]]);
    const site = parseNginx(
      siteConf(layout, { serverName: '_', tls: null, upstream: balancerUpstreamName(layout) }),
    );
    expect(findAll(site, 'proxy_pass').map((d) => d.args)).toEqual([
      [`http://${balancerUpstreamName(layout)}`],
    ]);
    expect(findAll(tree, 'server').map((d) => d.args[0])).toEqual([
      '[fd00::11]:8080',
      `10.0.1.12:80`,
      '10.0.0.9:80',
      '[2001:db8::7]:80',
    ]);
  });

  test('balancer: an IPv6 zone index (valid in hosts, not in nginx) is refused, not written', () => {
    const hosts = parseHosts('web1 upstream=[fe80::1%eth0]:80');
    if (typeof hosts === 'string') throw new Error(hosts);
    const member = { label: hosts[0]!.label, ...hosts[0]!.upstream! };
    expect(() => balancerUpstreamConf(app('shop', '/opt/shop'), [member])).toThrow(/zone/);
  });
});

describe('logrotate (logs.ts)', () => {
  test.each(
    [
      ['/opt/shop', '_u-1'],
      [`/srv/a.b/-c_d/${'r'.repeat(200)}`, 'u'.repeat(32)],
    ].map(([root, user]) => [short(root!), short(user!), root!, user!]),
  )('app-root %s, user %s: the patterns are the shared logs, su is the app user', (_r, _u, root, user) => {
    const s = provision({ 'app-root': root, 'app-user': user });
    const rule = parseLogrotate(logrotateConf(s));
    expect(rule.patterns).toEqual([`${s.layout.shared}/logs/*.log`, `${s.layout.shared}/logs/*/*.log`]);
    expect(rule.directives).toContainEqual(['su', user, user]);
  });

  test.each(APPS)(
    "nginx's logs of %s: its own directory, rotated as the standard says, nginx told to reopen",
    (_l, name, root) => {
      const l = app(name, root);
      const rule = parseLogrotate(nginxLogrotateConf(l));
      // Not /var/log/nginx/*.log: Debian's own nginx rule (14 days) names those.
      expect(rule.patterns).toEqual([`/var/log/nginx/${name}/*.log`]);
      for (const d of [['daily'], ['rotate', '30'], ['maxage', '30'], ['compress'], ['delaycompress']])
        expect(rule.directives).toContainEqual(d);
      expect(rule.directives).toContainEqual(['create', '0640', 'www-data', 'adm']);
      expect(rule.directives).toContainEqual(['postrotate']);
      expect(rule.directives.map((d) => d.join(' '))).toContain(
        'systemctl kill --kill-who=main --signal=USR1 nginx.service >/dev/null 2>&1 || true',
      );
      expect(l.logrotateNginx).toBe(`/etc/logrotate.d/metalship-${name}_nginx`);
    },
  );

  test("the app's and nginx's rules of two apps never share a file (xy's nginx rule, app xy-nginx's rule)", () => {
    const a = app('xy', '/opt/xy');
    const b = app('xy-nginx', '/opt/xy-nginx');
    const files = [a.logrotateApp, a.logrotateNginx, b.logrotateApp, b.logrotateNginx];
    expect(new Set(files).size).toBe(4);
  });

  test("journald's settings of the app's namespace: persistent, 30 days, day-long files", () => {
    const l = app('shop', '/opt/shop');
    expect(l.journaldConf).toBe('/etc/systemd/journald@shop.conf');
    const entries = parseUnit(JOURNALD_CONF);
    expect(entries.map((e) => [e.section, e.key, e.value])).toEqual([
      ['Journal', 'Storage', 'persistent'],
      ['Journal', 'MaxRetentionSec', '30day'],
      ['Journal', 'MaxFileSec', '1day'],
    ]);
  });

  test('an app-root with braces cannot be written in a logrotate file list: refused by the input, and by the builder', () => {
    expect(() => provision({ 'app-root': '/srv/{x}/{app}' })).toThrow(/Input 'app-root'/);
    const s = { ...provision({}), layout: layout('shop', '/srv/{x}/shop') };
    expect(() => logrotateConf(s)).toThrow(/app-root/);
  });
});

describe('Redis ACL file (redis.ts)', () => {
  test.each(['shop', '_x-1', 'r'.repeat(63), 'all'].map((u) => [short(u), u]))(
    'user %s: one line, its password hashed',
    (_label, user) => {
      const settings = provision({ 'redis-user': user, 'redis-password': 'p w\'"$(id) #\\' });
      const acl = parseAclFile(aclFile(settings.redis.user, [settings.redis.password]));
      const hash = createHash('sha256').update(settings.redis.password).digest('hex');
      expect(acl).toEqual([
        { user: 'default', rules: ['off', 'resetchannels', '-@all'] },
        { user, rules: ['on', `#${hash}`, '~*', '&*', '+@all', '-@dangerous'] },
      ]);
    },
  );

  test('while rotating, the user has both passwords (each once), hashed', () => {
    const acl = parseAclFile(aclFile('shop', ['new-pw-0123', 'old-pw-0123', 'new-pw-0123']));
    const hash = (p: string) => createHash('sha256').update(p).digest('hex');
    expect(acl[1]).toEqual({
      user: 'shop',
      rules: ['on', `#${hash('new-pw-0123')}`, `#${hash('old-pw-0123')}`, '~*', '&*', '+@all', '-@dangerous'],
    });
    expect(aclFile('shop', ['new-pw-0123', ''])).toBe(aclFile('shop', ['new-pw-0123']));
  });

  test("redis-user 'default' would turn the default user back on: refused by the input, and by the builder", () => {
    expect(() => provision({ 'redis-user': 'default' })).toThrow(/Input 'redis-user'/);
    expect(() => aclFile('default', ['redis-pw-0123'])).toThrow(/default/);
  });
});

describe('pg_hba rules (postgresql.ts)', () => {
  // pg_hba keywords are valid names: quoted, they are only names.
  test.each(
    [
      ['sameuser', 'all'],
      ['replication', '_u-1'],
      ['d'.repeat(63), 'u'.repeat(63)],
    ].map(([db, user]) => [short(db!), short(user!), db!, user!]),
  )('database %s, user %s', (_d, _u, db, user) => {
    const cidrs = '10.0.0.0/8, fd00::/8, ::/0';
    const settings = provision({ 'db-name': db, 'db-user': user, 'db-remote-cidrs': cidrs });
    const lines = parseHba(hbaBlock(settings));
    const q = (v: string) => [{ value: v, quoted: true }];
    const plain = (v: string) => [{ value: v, quoted: false }];
    expect(lines).toEqual([
      [plain('host'), q(db), q(user), plain('127.0.0.1/32'), plain('scram-sha-256')],
      [plain('host'), q(db), q(user), plain('::1/128'), plain('scram-sha-256')],
      ...valid(provisionInputs['db-remote-cidrs'], cidrs).map((c) => [
        plain('hostssl'),
        q(db),
        q(user),
        plain(c),
        plain('scram-sha-256'),
      ]),
    ]);
  });
});

describe('pg_hba: networks PostgreSQL cannot read', () => {
  // One unreadable line and PostgreSQL keeps the old file on a reload, and does not start at all.
  test.each(['999.1.1.1/8', '10.0.0.0/99', 'fd00::/200', ':::/8'])(
    '%s is refused by the input, and never written by the builder',
    (cidr) => {
      expect(() => provision({ 'db-remote-cidrs': cidr })).toThrow(/Input 'db-remote-cidrs'/);
      const s = provision({});
      expect(() => hbaBlock({ ...s, postgresql: { ...s.postgresql, remoteCidrs: [cidr] } })).toThrow(cidr);
    },
  );
});

describe('sudoers rule of the deploy user (users.ts)', () => {
  test.each(['deploy', '_d-1', 'd'.repeat(32)])('%s', (name) => {
    const user = valid(provisionInputs['deploy-user'], name);
    const rule = parseSudoers(sudoersRule(user));
    expect(rule.defaults).toEqual([{ user, options: ['!requiretty'] }]);
    expect(rule.rules).toEqual([
      {
        user,
        host: 'ALL',
        runas: 'root',
        tags: ['NOPASSWD'],
        commands: ['/usr/bin/bash -se', '/bin/bash -se'],
      },
    ]);
  });
});

describe('backup units (backup.ts): the program, the schedule and the database as given', () => {
  // backup-schedule at its edges: ranges, lists, repetitions, ~ (last days), spaces.
  const SCHEDULES = ['daily', 'Mon..Fri *-*-* 02:00:00', 'Sat,Sun *-*-1/2 3:0', '*-02~1 12:00', 'hourly'];
  const DATABASES = ['_d-1', 'd'.repeat(63)];
  const app = valid(connectionInputs.app, 'x-' + '9'.repeat(29) + 'z');
  test.each(SCHEDULES.flatMap((c) => DATABASES.map((d) => [c, d.length, d] as const)))(
    'schedule %j, database of %i characters',
    (schedule, _n, database) => {
      const onCalendar = valid(provisionInputs['backup-schedule'], schedule);
      const db = valid(provisionInputs['db-name'], database);
      const units = backupUnitFiles({
        app,
        database: db,
        backupDir: '/var/backups/x',
        retentionDays: 1,
        onCalendar,
      });
      const service = parseUnit(units.service);
      const spec = specifiers(`metalship-backup-${app}.service`);
      expect(execs(service, spec)).toEqual([[backupProgramPath(app), 'daily']]);
      expect(resolveSpecifiers(value(service, 'Unit', 'Description'), spec)).toBe(
        `metalship: PostgreSQL backup of ${db} (${app})`,
      );
      expect(resolveSpecifiers(value(parseUnit(units.timer), 'Timer', 'OnCalendar'), spec)).toBe(onCalendar);
      verifyUnits({
        [`metalship-backup-${app}.service`]: units.service,
        [`metalship-backup-${app}.timer`]: units.timer,
      });
      if (SYSTEMD_ANALYZE) expect(spawnSync('systemd-analyze', ['calendar', onCalendar]).status).toBe(0);
    },
  );

  test('the backup program keeps the database and the directory as given', () => {
    // The program's own checks allow any absolute directory without a newline: quotes, $, spaces.
    const dir = `/var/backups/it's "$(id)" \`x\` $HOME/a b`;
    const program = backupProgram({ app: 'shop', database: '_d-1', backupDir: dir, retentionDays: 3650 });
    const assignments = program.split('\n').filter((l) => /^(DB|DIR|RETENTION_DAYS)=/.test(l));
    expect(bash(`${assignments.join('\n')}\nprintf '%s\\n' "$DB" "$DIR" "$RETENTION_DAYS"`)).toBe(
      `_d-1\n${dir}\n3650\n`,
    );
  });
});

describe('sshd drop-in (ssh.ts)', () => {
  test.each(['prohibit-password', 'no'])(
    'ssh-root-login %s: each option once, with its value',
    (rootLogin) => {
      const settings = provision({ 'ssh-root-login': rootLogin });
      expect(parseSshdConfig(sshdDropIn(settings))).toEqual([
        ...sshdOptions(settings).map(([k, v]) => ({
          keyword: k.toLowerCase(),
          args: [k === 'PermitRootLogin' ? valid(provisionInputs['ssh-root-login'], rootLogin) : v],
        })),
        { keyword: 'challengeresponseauthentication', args: ['no'] },
      ]);
    },
  );
});

describe('Redis settings drop-in (redis.ts), as the item script writes it', () => {
  test.each(['256mb', '999999gb', ''])('redis-maxmemory %j', (maxmemory) => {
    const settings = provision({ 'redis-maxmemory': maxmemory, 'redis-memory-percent': '90' });
    const script = redisItem(settings).script.split('\n');
    const lines = [
      // The 6.2+ bind (the other versions: test/unit/versions.test.ts).
      `redis_bind=${quote(redisBind('6.2'))}`,
      script.find((l) => l.startsWith('maxmemory='))!,
      script.find((l) => l.startsWith(`ms_file ${REDIS_DROPIN} `))!,
    ];
    expect(parseRedisConf(bash(['ms_file() { cat; }', ...lines].join('\n')))).toEqual([
      ['bind', '127.0.0.1', '-::1'],
      ['protected-mode', 'yes'],
      ['port', '6379'],
      ['maxmemory', maxmemory || expect.stringMatching(/^[1-9]\d*$/)],
      ['maxmemory-policy', 'allkeys-lru'],
      ['appendonly', 'yes'],
      ['aclfile', REDIS_ACL],
    ]);
  });
});

describe('/etc/default/prometheus-node-exporter (monitoring.ts)', () => {
  test.each(['127.0.0.1:9100', '[::1]:9100', ':65535', '[fd00:0:0:0:0:0:0:1]:9100'])('%s', (listen) => {
    const text = nodeExporterDefaults(valid(provisionInputs['node-exporter-listen'], listen));
    // The shell (init scripts) sources it; systemd reads it as an EnvironmentFile and splits $ARGS into words.
    const args = bash(`. /dev/stdin <<'EOF'\n${text}EOF\nprintf '%s' "$ARGS"`);
    expect(args).toBe(`--web.listen-address=${listen}`);
    expect(execValue('/usr/bin/prometheus-node-exporter $ARGS', {}, { ARGS: args })).toEqual([
      { prefixes: '', argv: ['/usr/bin/prometheus-node-exporter', `--web.listen-address=${listen}`] },
    ]);
  });
});

describe('alerts (alert.ts): the units, the URLs in curl config files, the program settings', () => {
  test.each(APPS)('%s: the handler runs for the failed unit; it has no handler of its own', (_l, name) => {
    const units = alertUnits(name);
    const p = alertPaths(name);
    const handler = `metalship-alert-${name}@shop-api@blue.service.service`;
    const parsed = parseUnit(units.handler);
    expect(execs(parsed, specifiers(handler, 'shop-api@blue.service'))).toEqual([
      [p.program, 'unit', 'shop-api@blue.service'],
    ]);
    expect(values(parsed, 'Unit', 'OnFailure')).toEqual([]);
    const check = parseUnit(units.check);
    expect(execs(check, specifiers(p.check))).toEqual([[p.program, 'check']]);
    expect(resolveSpecifiers(value(check, 'Unit', 'OnFailure'), specifiers(p.check))).toBe(
      `metalship-alert-${name}@${p.check}.service`,
    );
    const dropIn = parseUnit(onFailureDropIn(name));
    expect(resolveSpecifiers(value(dropIn, 'Unit', 'OnFailure'), specifiers('shop-worker.service'))).toBe(
      `metalship-alert-${name}@shop-worker.service.service`,
    );
    verifyUnits({
      [`metalship-alert-${name}@.service`]: units.handler,
      [p.check]: units.check,
      [p.timer]: units.timer,
    });
  });

  // Webhook URLs as the alert-webhook input normalises them: $ ; { } [ ] | ` \ ' " % and credentials (a secret may hold them).
  const HOOKS = [
    'https://hooks.example.com/services/T0/B1/x?token=a"b\\c$HOME;{a,b}[1-2]|`id`%zz&q=it\'s',
    'http://user:p%40ss@[::1]:8080/hook/%h%i',
  ];
  test.each(HOOKS)('curl reads the URL back from the config file as given: %s', (hook) => {
    const url = valid(provisionInputs['alert-webhook'], hook);
    const dir = mkdtempSync(join(tmpdir(), 'metalship-curlrc-'));
    try {
      writeFileSync(join(dir, 'conf'), curlConfig(url));
      // Nothing listens on port 1: curl fails to connect, and says which URL it meant.
      const r = spawnSync(
        'curl',
        [
          '--disable',
          '--globoff',
          '--path-as-is',
          '--silent',
          '--connect-to',
          '::127.0.0.1:1',
          '--output',
          '/dev/null',
          '--write-out',
          '%{url_effective}',
          '--config',
          join(dir, 'conf'),
        ],
        { encoding: 'utf8' },
      );
      expect(r.stdout).toBe(url);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the program keeps its settings as given', () => {
    const o = {
      app: 'x-' + '9'.repeat(29) + 'z',
      diskPaths: ['/', `/srv/it's "$(id)" \`x\` $HOME/a b\\c/é`],
      diskPercent: 99,
      certificates: ['/etc/letsencrypt/live/a-b.example/fullchain.pem', '/etc/metalship/redis-tls/cert.pem'],
      certificateDays: 365,
      restoreRecord: `/var/backups/"q"/'s'/.last-verified.json`,
      restoreDays: 3650,
      backupUnit: 'metalship-backup-x.service',
      heartbeat: true,
    };
    const program = alertProgram(o);
    expect(program.startsWith('#!/usr/bin/python3 -I\n')).toBe(true);
    const line = program.split('\n').find((l) => l.startsWith('SETTINGS = '))!;
    const out = execFileSync('python3', ['-I', '-c', `import json\n${line}\nprint(json.dumps(SETTINGS))`], {
      encoding: 'utf8',
    });
    expect(JSON.parse(out)).toEqual({
      app: o.app,
      webhook: alertPaths(o.app).webhook,
      heartbeat: alertPaths(o.app).heartbeat,
      disk_paths: o.diskPaths,
      disk_percent: 99,
      certificates: o.certificates,
      certificate_days: 365,
      restore_record: o.restoreRecord,
      restore_days: 3650,
      backup_unit: o.backupUnit,
    });
  });
});
