import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseEnvText } from '../../src/inputs/dotenv.js';
import { InputError, parseInputs } from '../../src/inputs/parse.js';
import {
  factsStep,
  guardStep,
  itemStep,
  planItems,
  parseItemOutput,
  unknownSystem,
} from '../../src/remote/provision/index.js';

const BOOKWORM = { os: 'Debian GNU/Linux 12 (bookworm)', id: 'debian', version: '12' };
import { prelude } from '../../src/remote/provision/common.js';
import { SSH_PORTS } from '../../src/remote/provision/firewall.js';
import { HOSTKEY_ALGS, KNOWN_ALGORITHMS, reloadOneLine } from '../../src/remote/provision/ssh.js';
import { UNATTENDED } from '../../src/remote/provision/system.js';
import { sudoersRule } from '../../src/remote/provision/users.js';
import { aclFile } from '../../src/remote/provision/redis.js';
import { hbaBlock } from '../../src/remote/provision/postgresql.js';
import {
  ELSEWHERE,
  OTHER_HASH,
  PROVISION_VARIANTS,
  allScripts,
  base,
  raw,
  settings,
  topologyInputs,
} from '../support/provision.js';
import { inUseLines, passwordHash } from '../../src/remote/provision/in-use.js';
import { postgresqlItem } from '../../src/remote/provision/postgresql.js';
import { redisItem } from '../../src/remote/provision/redis.js';
import { bashErrors } from '../support/bash.js';

describe('provision inputs', () => {
  test('defaults parse and need the redis password', () => {
    expect(() => parseInputs('provision', raw({ ...base, 'redis-password': '' }))).toThrow(/redis-password/);
    expect(settings().postgresql.database).toBe('shop');
  });
  test.each([
    ['1BAD=x', /line 1: the text before the first = is not a key/],
    ['GOOD=1\nno equals sign here', /line 2 is not KEY=value/],
    ['A="open', /never closed/],
    ['A="an escaped \\" quote does not close it\nB=1', /never closed/],
  ])('env %j is rejected with the line', (env, msg) => {
    try {
      parseInputs('provision', raw({ ...base, env }));
      throw new Error('accepted');
    } catch (err) {
      expect(err).toBeInstanceOf(InputError);
      expect((err as Error).message).toMatch(/Input 'env': line/);
      expect((err as Error).message).toMatch(msg);
      expect((err as Error).message).not.toContain('no equals sign here');
    }
  });
  test('a double-quoted value may hold escaped quotes and span lines', () => {
    const env = 'A="it\'s \\"quoted\\" $(x)\nsecond line"\nB=\'single "q"\nline two\'\n';
    const r = parseEnvText(env);
    expect(r).toMatchObject({ text: env });
    expect(Object.keys((r as { values: Record<string, string> }).values)).toEqual(['A', 'B']);
  });
  test('dotenv values parse', () => {
    const r = parseEnvText(base.env!);
    expect(r).toMatchObject({ values: { A: '1', SECRET: 'two\nlines', B: 'x' } });
  });
  test.each([
    ['check', 'yes'],
    ['ssh-root-login', 'yes'],
    ['domains', 'bad domain'],
    ['firewall-allow', '22; rm'],
    ['db-name', 'x"; drop'],
  ])('%s=%j is invalid', (name, value) => {
    expect(() => parseInputs('provision', raw({ ...base, [name]: value }))).toThrow(new RegExp(`'${name}'`));
  });
  test('db-login-user and db-previous-user: rotation needs a password, and the previous role is not the login role', () => {
    expect(() =>
      parseInputs('provision', raw({ ...base, 'db-password': '', 'db-login-user': 'shop_b' })),
    ).toThrow("Input 'db-login-user' needs db-password");
    expect(() => parseInputs('provision', raw({ ...base, 'db-previous-user': 'shop' }))).toThrow(
      "Input 'db-previous-user' is the role db-password is set on (shop)",
    );
    expect(() =>
      parseInputs('provision', raw({ ...base, 'db-login-user': 'shop_b', 'db-previous-user': 'shop_b' })),
    ).toThrow(/db-previous-user' is the role db-password is set on \(shop_b\)/);
    expect(() => parseInputs('provision', raw({ ...base, 'db-login-user': 'postgres' }))).toThrow(
      /'db-login-user'/,
    );
    const s = settings({ 'db-login-user': 'shop_b', 'db-previous-user': 'shop' });
    expect(s.postgresql).toMatchObject({ user: 'shop', loginUser: 'shop_b', previousUser: 'shop' });
    expect(settings().postgresql).toMatchObject({ user: 'shop', loginUser: 'shop', previousUser: '' });
  });
  test('domains need acme-email', () => {
    expect(() => parseInputs('provision', raw({ ...base, domains: 'shop.example.com' }))).toThrow(
      /acme-email/,
    );
  });
});

describe('provision scripts', () => {
  test.each(PROVISION_VARIANTS.map((v, i) => [i, v]))('every script of variant %i is valid bash', (_i, v) => {
    for (const text of allScripts(settings(v))) expect(bashErrors(text)).toBe('');
  });
  test('hostile secrets are quoted, never executed', () => {
    const text = allScripts(settings()).join('\n');
    expect(text).not.toContain("it's; $(rm -rf /)");
    const line = text.split('\n').find((l) => l.includes('alter role'))!;
    const r = spawnSync('bash', ['-c', `q() { cat; }; CHECK=0\n${line}`], { encoding: 'utf8' });
    expect(r.stdout).toBe(
      `set password_encryption = 'scram-sha-256';\nalter role :"l" password 'it''s; $(rm -rf /) \\ "q"'\n`,
    );
    // The Redis password appears only hashed.
    expect(text).not.toContain("r'p$(id)");
    expect(aclFile('shop', ['x'])).toMatch(/^user default off/);
    expect(aclFile('shop', ['x'])).toContain('-@dangerous');
  });
  test('PostgreSQL rotation: every refusal comes before the first change; a pg_hba line per role', () => {
    const script = planItems(
      settings({ 'db-login-user': 'shop_b', 'db-previous-user': 'shop' }),
      BOOKWORM,
    ).find((p) => p.name === 'postgresql')!.item!.script;
    const lastRefusal = script.lastIndexOf('Nothing was changed.');
    const firstChange = Math.min(
      ...['create role', 'create database', 'grant ', 'alter role', 'comment on role', 'pg_reload_conf'].map(
        (w) => script.indexOf(w),
      ),
    );
    expect(lastRefusal).toBeGreaterThan(0);
    expect(lastRefusal).toBeLessThan(firstChange);
    const hba = hbaBlock(settings({ 'db-login-user': 'shop_b', 'db-previous-user': 'shop_a' }));
    for (const role of ['shop', 'shop_b', 'shop_a'])
      expect(hba).toContain(`host    "shop" "${role}" 127.0.0.1/32 scram-sha-256`);
    expect(hbaBlock(settings()).match(/^host /gm)).toHaveLength(2);
  });
  test('pre-checks: every refusal of an item, none of its changes, and valid bash', () => {
    const plan = planItems(
      settings({ 'db-login-user': 'shop_b', 'db-previous-user': 'shop', 'python-version': '3.11' }),
      BOOKWORM,
    );
    const precheck = (name: string) => plan.find((p) => p.name === name)!.item!.precheck!;
    expect(precheck('postgresql')).toContain(
      'names role $name, whose passwords provision manages for the app',
    );
    expect(precheck('redis')).toContain(
      'logs in to Redis as $user with a password this change would take away',
    );
    expect(precheck('python')).toContain('python-version asks for 3.11');
    // Installed but stopped: its roles cannot be judged, so refused rather than skipped.
    expect(precheck('postgresql')).toContain('PostgreSQL is installed on this host but does not answer');
    // No domains: the site would be a default server, and nginx takes one only.
    expect(precheck('nginx')).toContain('another site already is the default server');
    for (const { item } of plan) {
      if (!item?.precheck) continue;
      expect(bashErrors(item.precheck)).toBe('');
      for (const change of [
        'ms_changed',
        'ms_apply',
        'ms_file',
        'create role',
        'alter role',
        'comment on role',
        'grant ',
      ])
        expect(item.precheck).not.toContain(change);
    }
  });
  test('the default-server pre-check reads nginx -T whatever the lines, and only port 80 of every address conflicts', () => {
    const precheck = planItems(settings(), BOOKWORM).find((p) => p.name === 'nginx')!.item!.precheck!;
    const run = (files: Record<string, string>) => {
      const dump = Object.entries(files)
        .map(([f, text]) => `# configuration file ${f}:\n${text}\n`)
        .join('');
      const r = spawnSync('bash', ['-c', `nginx() { printf '%s' "$DUMP"; }\n${precheck}\necho passed`], {
        encoding: 'utf8',
        env: { ...process.env, DUMP: dump },
      });
      return r.stdout.includes('passed') ? 'passed' : r.stderr.replace(/.*\((.*)\)\. This app.*\n?/s, '$1');
    };
    const base = {
      '/etc/nginx/nginx.conf': 'http {\n  include /etc/nginx/sites-enabled/*;\n}',
      '/etc/nginx/sites-enabled/shop': 'server {\n    listen 80 default_server;\n    server_name _;\n}',
      '/etc/nginx/sites-enabled/default': 'server { listen 80 default_server; }',
    };
    expect(run(base)).toBe('passed');
    const site = '/etc/nginx/sites-enabled/catchall';
    for (const refused of [
      'server { listen 80 default_server; return 444; }',
      'server {\n  listen\n    [::]:80\n    default_server;\n}',
      'server { listen *:80 default; }',
      'server { listen 0.0.0.0 default_server reuseport; }',
    ])
      expect([refused, run({ ...base, [site]: refused })]).toEqual([refused, site]);
    for (const allowed of [
      'server { listen 443 ssl default_server; ssl_reject_handshake on; }',
      'server { listen 8080 default_server; }',
      'server { listen 10.0.0.1:80 default_server; }',
      'server {\n  # listen 80 default_server;\n  listen 80;\n}',
      'server { listen unix:/run/x.sock default_server; }',
    ])
      expect([allowed, run({ ...base, [site]: allowed })]).toEqual([allowed, 'passed']);
  });
  test('a server-name without domains names the HTTP site, which is then no default server and needs no pre-check', () => {
    const plan = planItems(settings({ 'server-name': 'shop.test www.shop.test' }), BOOKWORM);
    const nginx = plan.find((p) => p.name === 'nginx')!.item!;
    expect(nginx.script).toContain('server_name shop.test www.shop.test;');
    expect(nginx.script).not.toContain('default_server');
    expect(nginx.precheck ?? '').not.toContain('already is the default server');
  });
  test('pyenv path: clone, build and the interpreter it prints', () => {
    const py = planItems(settings({ 'python-install': 'pyenv', 'python-version': '3.12.4' }), BOOKWORM).find(
      (p) => p.name === 'python',
    )!.item!.script;
    expect(py).toContain('git clone --quiet --depth 1 https://github.com/pyenv/pyenv.git /opt/pyenv');
    expect(py).toContain('/opt/pyenv/bin/pyenv install --skip-existing "$full"');
    expect(py).toContain('echo "python /opt/pyenv/versions/$full/bin/python3"');
  });
  test('check mode compares a file without writing anything beside it, and reports missing, differing and equal files', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'msfile-'));
    try {
      writeFileSync(path.join(dir, 'same'), 'a\n', { mode: 0o644 });
      writeFileSync(path.join(dir, 'other'), 'b\n', { mode: 0o644 });
      const owner = `${spawnSync('id', ['-un'], { encoding: 'utf8' }).stdout.trim()}:${spawnSync('id', ['-gn'], { encoding: 'utf8' }).stdout.trim()}`;
      const call = (name: string) =>
        `ms_file ${dir}/${name} 644 ${owner} ${name} <<< a; echo "${name} wrote=$MS_WROTE"`;
      // A file made and removed beside them would change the directory's mtime.
      const before = statSync(dir, { bigint: true }).mtimeNs;
      const r = spawnSync(
        'bash',
        ['-c', [prelude(true), call('same'), call('other'), call('missing')].join('\n')],
        {
          encoding: 'utf8',
        },
      );
      expect(r.stdout).toBe(
        'same wrote=0\nchanged other differs\nother wrote=1\nchanged missing missing\nmissing wrote=1\n',
      );
      expect(spawnSync('ls', ['-A', dir], { encoding: 'utf8' }).stdout).toBe('other\nsame\n');
      expect(statSync(dir, { bigint: true }).mtimeNs).toBe(before);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test('check mode changes nothing', () => {
    const item = planItems(settings({ check: 'true' }), BOOKWORM);
    for (const p of item) if (p.item) expect(p.item.script).toContain('CHECK=1');
  });
});

describe("a db or redis host told what the app hosts' services log in with", () => {
  const db = () => settings(topologyInputs(true), ELSEWHERE);
  test('its scripts are valid bash', () => {
    for (const text of allScripts(db())) expect(bashErrors(text)).toBe('');
  });
  test("in_use prints this host's logins, then the app hosts', labels as they are", () => {
    const fn = inUseLines(db(), 'DATABASE_URL', (h) => (h === OTHER_HASH ? '-' : h));
    const r = spawnSync(
      'bash',
      ['-c', `${fn}\nin_use_here() { echo 'DATABASE_URL shop 00 here'; }\nin_use`],
      {
        encoding: 'utf8',
      },
    );
    expect(r.stdout).toBe(
      "DATABASE_URL shop 00 here\nDATABASE_URL shop - shop-api@blue.service on 10.0.0.5 $(id) 'x'\n",
    );
  });
  test('no hash but the new password’s reaches the PostgreSQL item; the Redis item gets the ACL’s kind', () => {
    const pg = postgresqlItem(db()).script;
    expect(pg).not.toContain(OTHER_HASH);
    expect(pg).toContain('DATABASE_URL shop - shop-api@blue.service on 10.0.0.5');
    const mine = settings(topologyInputs(true), {
      ...ELSEWHERE,
      logins: [{ ...ELSEWHERE.logins[0]!, hash: passwordHash(base['db-password']!) }],
    });
    expect(postgresqlItem(mine).script).toContain(
      `DATABASE_URL shop ${passwordHash(base['db-password']!)} shop-api`,
    );
    expect(redisItem(db()).script).toContain(
      `REDIS_URL shop ${OTHER_HASH} the current release .env on 10.0.0.6`,
    );
  });
  test('app hosts left out by limit: both items refuse changing or removing a password', () => {
    for (const item of [postgresqlItem(db()), redisItem(db())])
      expect(item.script).toMatch(/are not in this run \(limit\).*Nothing was changed/);
    const read = settings(topologyInputs(true), { ...ELSEWHERE, unread: [] });
    expect(postgresqlItem(read).script).not.toContain('not in this run');
    expect(redisItem(read).script).not.toContain('not in this run');
  });
});

describe('the systems provision knows', () => {
  test.each([
    ['debian', '11'],
    ['debian', '12'],
    ['debian', '13'],
    ['ubuntu', '22.04'],
    ['ubuntu', '24.04'],
  ])('%s %s is known', (id, version) => {
    expect(unknownSystem({ os: `${id} ${version}`, id, version })).toBeNull();
  });
  test.each([
    ['debian', '10'],
    ['ubuntu', '20.04'],
    ['ubuntu', '24.10'],
    ['centos', '9'],
    ['', ''],
  ])('%s %s is refused, with what it knows and how to go on', (id, version) => {
    expect(unknownSystem({ os: 'Some OS', id, version })).toMatch(
      /has not been tested on \(it knows debian 11, 12, 13; ubuntu 22\.04, 24\.04\): nothing was changed\. Set allow-untested-os: true/,
    );
  });
  test('the facts step reads os-release', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'metalship-osr-'));
    const file = path.join(dir, 'os-release');
    writeFileSync(file, 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nVERSION_ID="24.04"\n');
    const r = spawnSync('bash', ['-c', factsStep().script.replace('/etc/os-release', file)], {
      encoding: 'utf8',
    });
    rmSync(dir, { recursive: true });
    expect(factsStep().parse(r.stdout)).toEqual({ os: 'Ubuntu 24.04.1 LTS', id: 'ubuntu', version: '24.04' });
  });
});

const CA_PEM = '-----BEGIN CERTIFICATE-----\nTUlJQmZha2U=\n-----END CERTIFICATE-----\n';

describe('Ubuntu differences (command level)', () => {
  // Runs the port detection with stub systemctl/sshd: Ubuntu 24.04's ssh.socket listens on 2222.
  function ports(stub: string): string {
    const r = spawnSync('bash', ['-c', `${stub}\nset -e\n${SSH_PORTS}\necho "PORTS $ssh_ports"`], {
      encoding: 'utf8',
    });
    return (/PORTS (.*)/.exec(r.stdout)?.[1] ?? r.stderr).trim();
  }
  test("socket-activated ssh: the socket's ListenStream wins over sshd -T", () => {
    const stub = `systemctl() { case "$*" in *"is-enabled --quiet ssh.socket"*) return 0;; *"show ssh.socket -p Listen --value"*) echo "[::]:2222 (Stream) 0.0.0.0:2222"; return 0;; esac; return 1; }
sshd() { echo "port 22"; }`;
    expect(ports(stub)).toBe('2222');
  });
  test('classic sshd: sshd -T ports', () => {
    const stub = `systemctl() { return 1; }\nsshd() { printf 'port 22\\nport 2200\\n'; }`;
    expect(ports(stub)).toBe('22 2200');
  });
  test('reload: ssh.service, else sshd.service, else nothing when only ssh.socket is up', () => {
    const run = (active: string) =>
      spawnSync(
        'bash',
        [
          '-c',
          `systemctl() { case "$*" in "is-active --quiet ${active}") return 0;; reload*) echo "RELOAD $2"; return 0;; esac; return 1; }\n${reloadOneLine()}`,
        ],
        { encoding: 'utf8' },
      );
    expect(run('ssh.service').stdout).toBe('RELOAD ssh.service\n');
    expect(run('ssh.socket').stdout).toBe('');
    expect(run('none').status).toBe(1);
  });
  test('certbot: the snap (Ubuntu) renews through its own timer, the package through certbot.timer', () => {
    const tls = planItems(
      settings({ domains: 'shop.example.com', 'acme-email': 'ops@example.com' }),
      BOOKWORM,
    ).find((p) => p.name === 'tls')!.item!.script;
    const lines = tls.split('\n');
    const choose = lines.find((l) => l.startsWith('if [ -x /snap/bin/certbot ]'))!;
    const enable = lines.find((l) => l.includes('"$renew_timer"'))!;
    const dir = mkdtempSync(path.join(tmpdir(), 'metalship-snap-'));
    writeFileSync(path.join(dir, 'certbot'), '#!/bin/sh\n', { mode: 0o755 });
    const timer = (certbot: string) =>
      spawnSync(
        'bash',
        [
          '-c',
          `CHECK=0; ms_changed() { :; }; ms_apply() { "$@"; }; systemctl() { case "$1" in enable) echo "ENABLE $4";; *) return 1;; esac; }\n${choose.replace('/snap/bin/certbot', certbot)}\n${enable}`,
        ],
        { encoding: 'utf8' },
      ).stdout;
    expect(timer(path.join(dir, 'certbot'))).toBe('ENABLE snap.certbot.renew.timer\n');
    expect(timer(path.join(dir, 'none'))).toBe('ENABLE certbot.timer\n');
    rmSync(dir, { recursive: true });
    expect(tls).toContain('if ! command -v certbot >/dev/null 2>&1; then ms_install certbot; fi');
  });
  test("with a private ACME CA, the renewals trust it: the snap's renew unit, or certbot.service", () => {
    const tls = planItems(
      settings({ domains: 'shop.example.com', 'acme-email': 'ops@example.com', 'acme-ca-bundle': CA_PEM }),
      BOOKWORM,
    ).find((p) => p.name === 'tls')!.item!.script;
    const dropins = (snap: boolean) => {
      const dir = mkdtempSync(path.join(tmpdir(), 'metalship-ca-'));
      try {
        // Only the branch on the snap is run, with its paths moved under a scratch root.
        const branch = tls.slice(
          tls.indexOf('if [ -x /snap/bin/certbot ]; then\n'),
          tls.indexOf('\nfi\n', tls.indexOf('if [ -x /snap/bin/certbot ]; then\n')) + 3,
        );
        const r = spawnSync(
          'bash',
          [
            '-c',
            `${prelude(false)}\nsystemctl() { :; }\n${branch.replaceAll('/snap/bin/certbot', snap ? '/bin/sh' : '/nonexistent').replaceAll('/etc/systemd/system', dir)}`,
          ],
          { encoding: 'utf8' },
        );
        expect(r.stderr).toBe('');
        return spawnSync('find', [dir, '-type', 'f'], { encoding: 'utf8' }).stdout.replaceAll(dir, '').trim();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    };
    expect(dropins(true)).toBe('/snap.certbot.renew.service.d/metalship.conf');
    expect(dropins(false)).toBe('/certbot.service.d/metalship.conf');
  });
  test("needrestart (Ubuntu) stays out of provision's installs", () => {
    const r = spawnSync('bash', ['-c', `${prelude(false)}\necho "$NEEDRESTART_SUSPEND $NEEDRESTART_MODE"`], {
      encoding: 'utf8',
    });
    expect(r.stdout).toBe('1 l\n');
  });
  test('sudoers rule matches the command the actions run', () => {
    expect(sudoersRule('deploy')).toContain('deploy ALL=(root) NOPASSWD: /usr/bin/bash -se, /bin/bash -se');
  });
});

test('item output parsing', () => {
  expect(parseItemOutput(0, 'changed a\nwarning b\n', '').status).toBe('changed');
  expect(parseItemOutput(0, 'warning b\n', '').status).toBe('warning');
  expect(parseItemOutput(0, '', '').status).toBe('ok');
  expect(parseItemOutput(1, '', 'boom\n')).toMatchObject({ status: 'failed', detail: 'boom' });
});

test('no provision item names a fixed file in a world-writable directory: another user could have put a link there', () => {
  const opts = settings({ domains: 'shop.example.com', 'acme-email': 'ops@example.com' });
  const fixed = allScripts(opts)
    .flatMap((text) => text.split('\n'))
    .filter(
      (line) => /(^|[\s"'=>])\/(var\/)?tmp\/[A-Za-z0-9]/.test(line) && !/mktemp|-maxdepth 1 -name/.test(line),
    );
  expect(fixed).toEqual([]);
});

describe('what provision asks of the host tools (the real ones on this machine)', () => {
  test('ms_known keeps the host key signature names OpenSSH knows (rsa-sha2-512 is not in `ssh -Q key`)', () => {
    const r = spawnSync(
      'bash',
      ['-c', `${KNOWN_ALGORITHMS}\nms_known key-sig ${HOSTKEY_ALGS.join(' ')} no-such-alg`],
      {
        encoding: 'utf8',
      },
    );
    expect(r.stdout.split(',')).toEqual(HOSTKEY_ALGS);
  });
  test("unattended-upgrades: only security origins, whatever the package's defaults (Debian's and Ubuntu's)", () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'metalship-apt-'));
    try {
      // The packages' defaults, as Debian and Ubuntu ship them, come before ours (50 < 52).
      writeFileSync(
        path.join(dir, '50unattended-upgrades'),
        'Unattended-Upgrade::Origins-Pattern { "origin=Debian,codename=${distro_codename},label=Debian"; };\n' +
          'Unattended-Upgrade::Allowed-Origins { "${distro_id}:${distro_codename}"; "${distro_id}:${distro_codename}-updates"; };\n',
      );
      writeFileSync(path.join(dir, '52metalship-unattended-upgrades'), UNATTENDED);
      const r = spawnSync(
        'apt-config',
        [
          '-c',
          path.join(dir, '50unattended-upgrades'),
          '-c',
          path.join(dir, '52metalship-unattended-upgrades'),
          'dump',
        ],
        { encoding: 'utf8' },
      );
      expect(r.status).toBe(0);
      const origins = r.stdout
        .split('\n')
        .filter((l) => /^Unattended-Upgrade::(Origins-Pattern|Allowed-Origins):: /.test(l));
      expect(origins.length).toBe(5);
      for (const o of origins) expect(o).toMatch(/security/i);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('an item as a step: its script and how its output reads', () => {
  const item = { name: 'ssh' as const, script: 'true', guard: { confirm: 'true', revert: 'false' } };
  test('changes, notes, the python found and a guard applied', () => {
    const report = itemStep(item).parse(
      'changed sshd drop-in\nwarning slow disk\nnote certificate /etc/x\npython /usr/bin/python3.11\nguard ssh\n',
      { code: 0, stderr: '' },
    );
    expect(report).toEqual({
      outcome: {
        status: 'changed',
        changes: ['sshd drop-in'],
        warnings: ['slow disk'],
        detail: 'sshd drop-in; ⚠ slow disk',
      },
      python: '/usr/bin/python3.11',
      notes: ['certificate /etc/x'],
      guarded: true,
    });
  });
  test('a non-zero exit is a failed item with the end of its stderr, not an exception', () => {
    const s = itemStep(item);
    expect(s.reportsFailure).toBe(true);
    expect(
      s.parse('changed half done\n', { code: 3, stderr: 'one\ntwo\nsshd -t: bad option\n' }),
    ).toMatchObject({
      outcome: { status: 'failed', detail: 'one / two / sshd -t: bad option' },
      guarded: false,
      python: null,
    });
    expect(s.parse('', { code: 1, stderr: '' }).outcome.detail).toBe('exit code 1');
  });
  test('the item script runs as written; its guard steps run the guard commands', () => {
    const r = spawnSync('bash', ['-c', itemStep({ ...item, script: 'echo "changed x"; exit 0' }).script], {
      encoding: 'utf8',
    });
    expect(itemStep(item).parse(r.stdout, { code: r.status ?? -1, stderr: r.stderr }).outcome.status).toBe(
      'changed',
    );
    expect(guardStep(item, 'confirm')).toMatchObject({ what: 'confirming the ssh change', script: 'true' });
    expect(guardStep(item, 'revert')).toMatchObject({ what: 'reverting the ssh change', script: 'false' });
  });
});
