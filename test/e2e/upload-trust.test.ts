// The upload's trust boundaries, attacked on real hosts: the runner packs
// exactly the manifest's regular files whatever their names look like, refuses
// links that resolve out of the source (physically, on the runner and in the
// release), sends a host nothing it asks for outside the manifest, and a host
// unpacks nothing but the manifest's regular files, whatever it is sent.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { layout } from '../../src/remote/layout.js';
import { buildStep, prepareStep, type Manifest } from '../../src/remote/release.js';
import { wrapScript } from '../../src/remote/session.js';
import { sshRun } from '../support/hosts.js';
import { tarOf, type Member } from '../support/tarball.js';
import {
  connectionInputs,
  e2eState,
  onHost,
  outcome,
  registerSecret,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  type E2EState,
} from '../support/e2e.js';

type Host = E2EState['hosts'][0];
let state: E2EState;
const sources: string[] = [];

beforeAll(() => {
  state = e2eState();
});
afterAll(async () => {
  for (const s of sources) await rm(s, { recursive: true, force: true });
});

async function source(tag: string): Promise<string> {
  const dir = await sampleAppCopy(tag);
  sources.push(dir);
  return dir;
}

/** The release of a copy of the sample app on these hosts. */
function releaseInputs(app: string, dir: string, hosts: Host[]): Record<string, string> {
  return { ...connectionInputs(state, hosts), ...sampleAppInputs(app, dir) };
}

/** What a release holds besides .metalship, one `type mode path` line each (find -printf). */
async function releaseTree(host: Host, rel: string): Promise<string[]> {
  const out = await onHost(
    state,
    host,
    `cd ${rel} && find . -mindepth 1 ! -path ./.metalship ! -path './.metalship/*' -printf '%y %m %p\\n' | sort`,
  );
  return out.split('\n').filter(Boolean);
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

describe('local packing sends exactly the manifest', () => {
  test('a file named @evil.tar is sent as itself: the archive it names adds no setuid file and no link', async () => {
    const host = state.hosts[0]!;
    const dir = await source('at');
    // node-tar's create reads "@x" as "add the members of the archive x": evil.tar
    // carries @evil.tar itself (so every manifest file still checks out), a
    // setuid-root shell script and a link to /etc.
    const innocent = 'innocent\n';
    await writeFile(path.join(dir, '@evil.tar'), innocent);
    await writeFile(
      path.join(dir, 'evil.tar'),
      tarOf([
        { path: '@evil.tar', body: innocent },
        { path: 'suid-root', mode: 0o4755, body: '#!/bin/sh\nid\n' },
        { path: 'etc-link', type: 'SymbolicLink', linkpath: '/etc' },
      ]),
    );
    const r = await runBundle('release', releaseInputs('trustat', dir, [host]));
    const rel = `/opt/trustat/releases/${r.outputs['release-id']}`;
    const tree = await releaseTree(host, rel);
    expect(tree.filter((l) => /suid-root|etc-link/.test(l))).toEqual([]);
    expect(await onHost(state, host, `find ${rel} -xdev -perm /6000 -printf '%m %p\\n'`)).toBe('');
    expect(outcome(r)).toBe('succeeded');
    expect(await onHost(state, host, `cd ${rel} && sha256sum ./@evil.tar ./evil.tar`)).toBe(
      execFileSync('sha256sum', ['./@evil.tar', './evil.tar'], { cwd: dir, encoding: 'utf8' }),
    );
  });

  test('names that look like tar options or archive references arrive as plain files, byte for byte', async () => {
    const host = state.hosts[0]!;
    const dir = await source('names');
    const names = [
      '@x',
      '@@y',
      '-rf',
      '-C',
      '--checkpoint=1',
      '--checkpoint-action=exec=touch ms-upload-pwned',
      '--to-command=touch ms-upload-pwned',
      'sub/@z',
      'sub/-',
      ' lead space',
      'new\nline',
    ];
    await mkdir(path.join(dir, 'sub'));
    await writeFile(path.join(dir, 'x'), 'not an archive\n');
    for (const n of names) await writeFile(path.join(dir, n), `content of ${JSON.stringify(n)}\n`);
    const r = await runBundle('release', releaseInputs('trustnames', dir, [host]));
    expect(r.log).not.toMatch(/::error::|^error:/m);
    expect(outcome(r)).toBe('succeeded');
    const rel = `/opt/trustnames/releases/${r.outputs['release-id']}`;
    for (const n of names) {
      const q = `'${n.replace(/'/g, `'\\''`)}'`;
      expect(await onHost(state, host, `cat -- ${rel}/${q}`)).toBe(`content of ${JSON.stringify(n)}\n`);
    }
    expect(await onHost(state, host, 'find / -xdev -name ms-upload-pwned')).toBe('');
    // Once it serves (made current here, without a switch), the next release reuses
    // every file from it and is sent only the one that changed.
    await onHost(state, host, `ln -sfn ${rel} /opt/trustnames/current`);
    await writeFile(path.join(dir, '-rf'), 'changed\n');
    const next = await runBundle('release', releaseInputs('trustnames', dir, [host]));
    expect(outcome(next)).toBe('succeeded');
    const [res] = JSON.parse(next.outputs.results!) as { filesSent: number; filesReused: number }[];
    expect(res!.filesSent).toBe(1);
    expect(res!.filesReused).toBeGreaterThan(names.length);
    const again = `/opt/trustnames/releases/${next.outputs['release-id']}`;
    expect(await onHost(state, host, `cat -- ${again}/-rf ${again}/@x`)).toBe(
      `changed\ncontent of ${JSON.stringify('@x')}\n`,
    );
  });
});

describe('links are checked by where they really lead', () => {
  const cases: [string, [string, string][], RegExp][] = [
    // The text "a/b/up/../etc" stays inside; through the link up, it is the source's parent's etc.
    [
      'a link through a link that climbs out (up -> ../.., sys -> a/b/up/../etc)',
      [
        ['a/b/up', '../..'],
        ['sys', 'a/b/up/../etc'],
      ],
      /\bsys\b.*outside the source/,
    ],
    [
      'a chain whose last hop climbs out (d -> a/b/up, e -> d/..)',
      [
        ['a/b/up', '../..'],
        ['d', 'a/b/up'],
        ['e', 'd/..'],
      ],
      /\be\b.*outside the source/,
    ],
    // logs is a shared path: in the release it is a link to {app-root}/shared/logs.
    [
      'a link through a shared path and back up (l -> logs/..)',
      [['l', 'logs/..']],
      /\bl\b.*shared path logs/,
    ],
    ["a link to the app's .env", [['config', '.env']], /\bconfig\b.*\.env/],
    ["a link to the checkout's .git/config", [['gc', '.git/config']], /\bgc\b.*\.git/],
  ];

  test.each(cases)('%s is refused before any host is contacted', async (_name, links, message) => {
    const host = state.hosts[1]!;
    const dir = await source('links');
    await mkdir(path.join(dir, 'a/b'), { recursive: true });
    await mkdir(path.join(dir, '.git'));
    await writeFile(path.join(dir, '.git/config'), '[core]\n');
    for (const [at, target] of links) await symlink(target, path.join(dir, at));
    const r = await runBundle('release', releaseInputs('trustlinks', dir, [host]));
    expect(r.log).toMatch(message);
    expect(r.code).toBe(1);
    // Refused on the runner, before any connection: the host never heard of it.
    expect(r.log).not.toMatch(/Connecting/);
    expect(await onHost(state, host, 'ls /opt/trustlinks/releases 2>/dev/null || true')).toBe('');
  });
});

describe('a compromised host cannot read the runner’s files', () => {
  const token = `ghp_FAKEcheckoutTOKEN${Date.now()}`;
  const outsideToken = `runner-only-${Date.now()}`;
  const shims = '/usr/local/bin/python3 /usr/local/bin/tar';

  afterAll(async () => {
    for (const h of state.hosts.slice(0, 2)) await onHost(state, h, `rm -rf ${shims} /var/tmp/ms-capture`);
  });

  test('a host answering .git/config, ../../../../etc/passwd and a file beside the source gets nothing', async () => {
    const [bad, good] = state.hosts as [Host, Host];
    const parent = await mkdtemp(path.join(tmpdir(), 'metalship-runner-'));
    sources.push(parent);
    const dir = path.join(parent, 'src');
    execFileSync('cp', ['-a', (await source('victim')) + '/.', dir + '/']);
    registerSecret('the fake checkout token', token);
    await mkdir(path.join(dir, '.git'));
    await writeFile(
      path.join(dir, '.git/config'),
      `[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic ${token}\n`,
    );
    await writeFile(path.join(dir, '.env'), `SECRET=${token}\n`);
    await writeFile(path.join(parent, 'runner-secret'), `${outsideToken}\n`);
    const hostile = JSON.stringify({
      need: ['.git/config', '.env', '../../../../etc/passwd', '../runner-secret', 'main.py', 'main.py'],
      reused: 0,
    });
    // On the bad host: python3 answers stage-files with that need list (after
    // staging for real); tar keeps a copy of whatever it is given. mstool runs
    // `python3 -I -c SRC stage-files ...`: the command is the fourth argument.
    await onHost(
      state,
      bad,
      [
        'mkdir -p /var/tmp/ms-capture',
        `cat > /usr/local/bin/python3 <<'EOF'\n#!/bin/sh\nfor a in "$@"; do if [ "$a" = stage-files ]; then /usr/bin/python3 "$@" >/dev/null || exit; printf '%s\\n' '${hostile}'; exit 0; fi; done\nexec /usr/bin/python3 "$@"\nEOF`,
        `cat > /usr/local/bin/tar <<'EOF'\n#!/bin/sh\nf=/var/tmp/ms-capture/upload-$$.tgz\ntee "$f" | /usr/bin/tar "$@"\nEOF`,
        `chmod 755 ${shims}`,
      ].join('\n'),
    );
    const r = await runBundle('release', releaseInputs('trusthost', dir, [bad, good]));
    const results = JSON.parse(r.outputs.results ?? '[]') as { host: string; ok: boolean; error?: string }[];
    const found = await onHost(
      state,
      bad,
      `grep -rlF -e ${token} -e ${outsideToken} /opt /var/tmp /tmp /root 2>/dev/null; for f in /var/tmp/ms-capture/*; do [ -f "$f" ] && zcat "$f" | grep -aF -e ${token} -e ${outsideToken} >/dev/null && echo "$f"; done; find /opt/trusthost/releases -path '*etc/passwd'; true`,
    );
    expect(found).toBe('');
    expect(r.code).toBe(1);
    expect(r.log).toMatch(
      new RegExp(
        `${bad.address.replace(/\./g, '\\.')}: the host asked for "\\.git/config", which is not a file of the manifest: refused, nothing was sent to it`,
      ),
    );
    expect(results.map((x) => [x.host, x.ok])).toEqual([
      [bad.address, false],
      [good.address, true],
    ]);
    // Nothing was sent: the build never ran there, and the release is marked failed.
    const rel = `/opt/trusthost/releases/${r.outputs['release-id']}`;
    expect((await onHost(state, bad, `cat ${rel}/.metalship/status`)).trim()).toBe('failed');
    expect(await onHost(state, bad, `test -L ${rel}/.venv && echo built || echo 'never built'`)).toBe(
      'never built\n',
    );
  });
});

describe('a host unpacks nothing but the manifest’s regular files, whatever it is sent', () => {
  const MAIN = 'print("hello")\n';
  const good: Member = { path: 'main.py', body: MAIN };
  const shopLayout = layout('trusttar', '/opt/trusttar');
  let n = 0;

  /** Runs a script on the host the way the transport does, with data after it on stdin. */
  async function runScript(host: Host, text: string, data: Buffer) {
    const input = Buffer.concat([Buffer.from(wrapScript(text)), data]).toString('base64');
    return sshRun(
      host,
      state.key,
      'f=$(mktemp) && base64 -d > "$f" && { bash -se < "$f"; rc=$?; rm -f "$f"; exit $rc; }',
      {
        input,
        idleMs: 120000,
      },
    );
  }

  const cases: [string, Member[]][] = [
    ['a link to /etc', [good, { path: 'etc', type: 'SymbolicLink', linkpath: '/etc' }]],
    ['a hard link', [good, { path: 'hard', type: 'Link', linkpath: 'main.py' }]],
    [
      'a setuid-root file outside the manifest',
      [good, { path: 'suid', mode: 0o4755, body: '#!/bin/sh\nid\n' }],
    ],
    ['the setuid bit on a manifest file', [{ ...good, mode: 0o4755 }]],
    ['a FIFO', [good, { path: 'fifo', type: 'FIFO' }]],
    ['a device', [good, { path: 'null2', type: 'CharacterDevice', devmaj: 1, devmin: 3, mode: 0o666 }]],
    ['a directory outside the manifest', [good, { path: 'extra/', type: 'Directory', mode: 0o755 }]],
    ['a path climbing out of the release', [good, { path: '../../escape.py', body: 'x = 1\n' }]],
    ['a file outside the manifest', [good, { path: 'extra.py', body: 'x = 1\n' }]],
    ['a manifest file twice', [good, { ...good, body: 'print("evil")\n' }]],
  ];

  test.each(cases)('%s is refused, and the release holds nothing but main.py', async (_name, members) => {
    const host = state.hosts[2]!;
    const id = `case-${++n}`;
    const manifest: Manifest = { files: [['main.py', sha256(MAIN), '644', MAIN.length]], links: [] };
    const prep = await runScript(
      host,
      prepareStep({ layout: shopLayout, releaseId: id, user: 'trusttar', sharedPaths: [] }, manifest).script,
      Buffer.from(JSON.stringify(manifest)),
    );
    expect(prep.stdout).toMatch(/"need": \["main.py"\]/);
    const build = await runScript(
      host,
      buildStep({
        layout: shopLayout,
        releaseId: id,
        user: 'trusttar',
        hasUpload: true,
        python: 'python3',
        venvKey: 'py-trusttar',
        requirements: '',
        pipArgs: [],
        systemSitePackages: true,
        env: '',
        sharedPaths: [],
        importCheck: null,
        runtimeRecord: '{}\n',
        metadata: { id },
      }).script,
      gzipSync(tarOf(members)),
    );
    const rel = shopLayout.release(id);
    const tree = await releaseTree(host, rel);
    expect(tree.filter((line) => line !== 'f 644 ./main.py')).toEqual([]);
    expect(await onHost(state, host, `ls -A ${shopLayout.releases}/.. | grep -c escape || true`)).toBe('0\n');
    expect((await onHost(state, host, `cat ${rel}/.metalship/status`)).trim()).toBe('building');
    expect(build.code).not.toBe(0);
    expect(build.stderr).toMatch(/refus|not a file of the manifest|twice|mode/);
  });
});
