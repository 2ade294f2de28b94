// What provision and the release write where the syntax depends on the version
// the host has (Debian 11, 12 and 13; Ubuntu 22.04 has bullseye's Redis 6.0
// and nginx 1.18): the scripts run here under bash with the version-reporting
// commands stubbed, and the files they would write are read back.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { provisionSettings } from '../../src/actions/provision.js';
import { parseInputs } from '../../src/inputs/parse.js';
import { ACME_WEBROOT, siteConf } from '../../src/remote/nginx.js';
import { prelude, type Item } from '../../src/remote/provision/common.js';
import { certPaths, nginxItem } from '../../src/remote/provision/nginx.js';
import { REDIS_ACL, REDIS_DROPIN, redisItem } from '../../src/remote/provision/redis.js';
import type { ProvisionSettings } from '../../src/remote/provision/settings.js';
import { uvicornFlagsScript } from '../../src/remote/switch.js';
import { parseAclFile, parseRedisConf } from '../support/confs.js';
import { FIXTURE_KEY } from '../support/keys.js';
import { findAll, parseNginx } from '../support/nginx.js';

function provision(inputs: Record<string, string> = {}): ProvisionSettings {
  const raw: Record<string, string> = {
    hosts: '10.0.0.5',
    app: 'shop',
    'ssh-key': FIXTURE_KEY,
    'known-hosts':
      '10.0.0.5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl',
    'redis-password': 'redis-pw-0123',
    'redis-maxmemory': '256mb',
    ...inputs,
  };
  return provisionSettings(
    parseInputs('provision', (n) => raw[n]),
    { worker: true, scheduler: true },
  );
}

/**
 * Runs an item in check mode with `stubs` defined after the prelude: nothing is
 * installed, and ms_file writes each file into a scratch directory (by base
 * name) instead of its path. Returns the exit code, stderr and those files.
 */
function runItem(
  item: Item,
  stubs: string,
  transform: (script: string) => string = (s) => s,
): { code: number; stderr: string; files: Record<string, string> } {
  const head = prelude(false);
  expect(item.script.startsWith(head)).toBe(true);
  const dir = mkdtempSync(join(tmpdir(), 'metalship-versions-'));
  try {
    const body = transform(item.script.slice(head.length));
    const script = [
      prelude(true),
      'ms_install() { :; }',
      'ms_file() { cat > "$OUT/${1##*/}"; MS_WROTE=1; }',
      stubs,
      body,
    ].join('\n');
    const r = spawnSync('bash', ['-c', script], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH, OUT: dir },
    });
    const files = Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
    return { code: r.status ?? -1, stderr: r.stderr, files };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const base = (path: string) => path.slice(path.lastIndexOf('/') + 1);

describe('Redis (redis.ts): the syntax follows redis-server --version', () => {
  const opts = provision();
  const hash = createHash('sha256').update('redis-pw-0123').digest('hex');
  const banner = (v: string) => `Redis server v=${v} sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=0`;
  const run = (version: string) =>
    runItem(redisItem(opts), `redis-server() { echo ${JSON.stringify(version)}; }`);
  const settings = (bind: string[]) => [
    ['bind', ...bind],
    ['protected-mode', 'yes'],
    ['port', '6379'],
    ['maxmemory', '256mb'],
    ['maxmemory-policy', 'allkeys-lru'],
    ['appendonly', 'yes'],
    ['aclfile', REDIS_ACL],
  ];

  // Debian 11 and Ubuntu 22.04: no channel rules, no optional bind address.
  test('6.0.16 (Debian 11)', () => {
    const r = run(banner('6.0.16'));
    expect(r.code).toBe(0);
    expect(parseAclFile(r.files[base(REDIS_ACL)]!)).toEqual([
      { user: 'default', rules: ['off', '-@all'] },
      { user: 'shop', rules: ['on', `#${hash}`, '~*', '+@all', '-@dangerous'] },
    ]);
    expect(parseRedisConf(r.files[base(REDIS_DROPIN)]!)).toEqual(settings(['127.0.0.1', '::1']));
  });

  test.each(['6.2.6', '7.0.15', '8.0.2', '10.1.0'])('%s', (version) => {
    const r = run(banner(version));
    expect(r.code).toBe(0);
    expect(parseAclFile(r.files[base(REDIS_ACL)]!)).toEqual([
      { user: 'default', rules: ['off', 'resetchannels', '-@all'] },
      { user: 'shop', rules: ['on', `#${hash}`, '~*', '&*', '+@all', '-@dangerous'] },
    ]);
    expect(parseRedisConf(r.files[base(REDIS_DROPIN)]!)).toEqual(settings(['127.0.0.1', '-::1']));
  });

  test.each([
    [banner('5.0.7'), /redis-server 5\.0\.7 is not supported: provision needs Redis 6\.0 or newer/],
    [
      'redis-server: command garbled',
      /of unknown version \(redis-server --version says: redis-server: command garbled\)/,
    ],
    ['', /of unknown version/],
  ])('%j fails before anything is written', (version, message) => {
    const r = run(version);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/nothing was changed/);
    expect(r.files).toEqual({});
  });
});

describe('nginx (nginx.ts): HTTP/2 as the listen flag before 1.25.1, as a directive from it on', () => {
  const settings = provision({ domains: 'shop.example.com', 'acme-email': 'ops@example.com' });
  const cert = certPaths(settings)!;

  /** The TLS site the nginx item writes when the certificate exists, for this `nginx -v`. */
  function tlsSite(version: string): { code: number; stderr: string; site?: string } {
    const dir = mkdtempSync(join(tmpdir(), 'metalship-cert-'));
    try {
      writeFileSync(join(dir, 'fullchain.pem'), '');
      const r = runItem(nginxItem(settings), `nginx() { echo ${JSON.stringify(version)} >&2; }`, (script) =>
        script.replaceAll(`[ -f ${cert.certificate} ]`, `[ -f ${join(dir, 'fullchain.pem')} ]`),
      );
      return { code: r.code, stderr: r.stderr, site: r.files[base(settings.layout.nginxSite)] };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  const listens = (site: string) =>
    findAll(parseNginx(site), 'listen')
      .map((d) => d.args)
      .filter((a) => a[0]!.endsWith('443'));

  test.each([
    'nginx version: nginx/1.18.0 (Ubuntu)',
    'nginx version: nginx/1.22.1',
    'nginx version: nginx/1.25.0',
  ])('%s: listen ... ssl http2', (version) => {
    const r = tlsSite(version);
    expect(r.code).toBe(0);
    expect(listens(r.site!)).toEqual([
      ['443', 'ssl', 'http2'],
      ['[::]:443', 'ssl', 'http2'],
    ]);
    expect(findAll(parseNginx(r.site!), 'http2')).toEqual([]);
    // As before the version mattered: hosts provisioned then see no change.
    expect(r.site).toBe(
      siteConf(settings.layout, {
        serverName: 'shop.example.com',
        tls: cert,
        acmeWebroot: ACME_WEBROOT,
        logDir: settings.layout.nginxLogs,
      }),
    );
  });

  test.each(['nginx version: nginx/1.25.1', 'nginx version: nginx/1.26.3', 'nginx version: nginx/1.28.0'])(
    '%s: listen ... ssl, and http2 on',
    (version) => {
      const r = tlsSite(version);
      expect(r.code).toBe(0);
      expect(listens(r.site!)).toEqual([
        ['443', 'ssl'],
        ['[::]:443', 'ssl'],
      ]);
      expect(findAll(parseNginx(r.site!), 'http2').map((d) => d.args)).toEqual([['on']]);
    },
  );

  test.each([
    ['nginx version: nginx/1.9.4', /nginx 1\.9\.4 is not supported/],
    ['nginx: command garbled', /of unknown version \(nginx -v says: nginx: command garbled\)/],
  ])('%j fails before anything is written', (version, message) => {
    const r = tlsSite(version);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.site).toBeUndefined();
  });

  test('a site without TLS does not depend on the version', () => {
    const r = runItem(nginxItem(provision()), 'nginx() { echo "nginx: command garbled" >&2; }');
    expect(r.code).toBe(0);
    expect(
      findAll(parseNginx(r.files[base(provision().layout.nginxSite)]!), 'listen').map((d) => d.args),
    ).toEqual([
      ['80', 'default_server'],
      ['[::]:80', 'default_server'],
    ]);
  });
});

describe('uvicorn flags (switch.ts): what the release venv’s uvicorn accepts', () => {
  /** uvicorn.env for a release whose uvicorn's config.py mentions these options. */
  function flagsFor(options: string[] | null, venv?: string): string {
    const root = mkdtempSync(join(tmpdir(), 'metalship-uvicorn-'));
    try {
      const rel = join(root, 'release');
      const pkgs = join(root, 'site');
      mkdirSync(join(rel, '.venv/bin'), { recursive: true });
      mkdirSync(join(rel, '.metalship'));
      if (options) {
        mkdirSync(join(pkgs, 'uvicorn'), { recursive: true });
        writeFileSync(join(pkgs, 'uvicorn/__init__.py'), '');
        writeFileSync(join(pkgs, 'uvicorn/config.py'), options.map((o) => `${o}: int = 0\n`).join(''));
      }
      // The venv's python: this machine's, seeing only the fake uvicorn (-I would hide PYTHONPATH).
      writeFileSync(
        join(rel, '.venv/bin/python'),
        `#!/bin/sh\nshift\nexec env PYTHONPATH=${pkgs} python3 "$@"\n`,
        { mode: 0o755 },
      );
      const r = spawnSync(
        'bash',
        [
          '-c',
          `runuser() { shift 3; "$@"; }\n${uvicornFlagsScript(rel, 'shop', venv ?? join(root, 'venv'))}`,
        ],
        {
          encoding: 'utf8',
        },
      );
      expect(r.status).toBe(0);
      return readFileSync(join(rel, '.metalship/uvicorn.env'), 'utf8');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }

  test.each([
    ['0.13 (Debian 11)', [], 'METALSHIP_UVICORN_FLAGS=\n'],
    ['0.17 (Debian 12)', ['server_header'], 'METALSHIP_UVICORN_FLAGS=--no-server-header\n'],
    [
      '0.32 (Debian 13)',
      ['server_header', 'timeout_graceful_shutdown'],
      'METALSHIP_UVICORN_FLAGS=--timeout-graceful-shutdown 30 --no-server-header\n',
    ],
  ])('uvicorn %s', (_label, options, env) => {
    expect(flagsFor(options)).toBe(env);
  });

  test('no uvicorn in the venv: no flags', () => {
    expect(flagsFor(null)).toBe('METALSHIP_UVICORN_FLAGS=\n');
  });

  test('a sealed venv keeps its answer: the next release of it reads it, without starting Python', () => {
    const venv = mkdtempSync(join(tmpdir(), 'metalship-venv-'));
    try {
      // Not sealed yet (no completion mark): nothing kept.
      expect(flagsFor(['server_header'], venv)).toBe('METALSHIP_UVICORN_FLAGS=--no-server-header\n');
      expect(existsSync(join(venv, '.metalship-uvicorn.env'))).toBe(false);
      writeFileSync(join(venv, '.metalship-complete'), '');
      expect(flagsFor(['server_header'], venv)).toBe('METALSHIP_UVICORN_FLAGS=--no-server-header\n');
      // Another uvicorn now would answer otherwise: the kept answer is what counts.
      expect(flagsFor(null, venv)).toBe('METALSHIP_UVICORN_FLAGS=--no-server-header\n');
      // A link planted in its place is not read.
      rmSync(join(venv, '.metalship-uvicorn.env'));
      writeFileSync(join(venv, 'elsewhere'), 'METALSHIP_UVICORN_FLAGS=--evil\n');
      symlinkSync(join(venv, 'elsewhere'), join(venv, '.metalship-uvicorn.env'));
      expect(flagsFor(null, venv)).toBe('METALSHIP_UVICORN_FLAGS=\n');
    } finally {
      rmSync(venv, { recursive: true, force: true });
    }
  });
});
