// The upload's trust boundaries, fast and local: the manifest (links checked by
// where they really lead, special files refused), the packing (exactly the
// manifest's regular files, whatever their names), the host's answer (only
// manifest files), and the host's unpacking and checks (the Python tool, run
// here with python3 on a scratch release).
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { layout } from '../../src/remote/layout.js';
import { prepareStep, type Manifest } from '../../src/remote/release.js';
import { buildManifest, packFiles } from '../../src/stages/source.js';
import { mstool as runTool } from '../support/mstool.js';
import { tarOf, type Member } from '../support/tarball.js';

/** The prepare step's parser: what the runner makes of a host's answer. */
const parsePrepared = (stdout: string, manifest: Manifest) =>
  prepareStep(
    { layout: layout('shop', '/opt/shop'), releaseId: 'r1', user: 'shop', sharedPaths: [] },
    manifest,
  ).parse(stdout);

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'metalship-upload-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Writes files (path -> content) under root, making their directories. */
function tree(root: string, files: Record<string, string>): void {
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    writeFileSync(path.join(root, p), content);
  }
}

interface Entry {
  path: string;
  type: string;
  mode: number;
  uid?: number;
  gid?: number;
  uname?: string;
  body: string;
}

/** Every entry of a (gzipped) tar, as node-tar reads it. */
function entriesOf(archive: Buffer): Promise<Entry[]> {
  return new Promise((resolve, reject) => {
    const out: Entry[] = [];
    const parser = new Parser({
      onReadEntry: (e: ReadEntry) => {
        const chunks: Buffer[] = [];
        e.on('data', (c: Buffer) => chunks.push(c));
        e.on('end', () =>
          out.push({
            path: e.path,
            type: e.type,
            mode: e.mode ?? -1,
            uid: e.uid,
            gid: e.gid,
            uname: e.uname,
            body: Buffer.concat(chunks).toString(),
          }),
        );
      },
    });
    parser.on('end', () => resolve(out));
    parser.on('error', reject);
    parser.end(archive);
  });
}

const LONG = `${'deep/'.repeat(30)}${'n'.repeat(120)}.py`;

describe('packing', () => {
  test('names like @x, -rf and --checkpoint=1 are packed as themselves; modes are the manifest’s, owners root', async () => {
    const names = ['@evil.tar', '@@y', '-rf', '--checkpoint=1', 'sub/@z', 'new\nline', LONG, 'run.sh'];
    tree(dir, Object.fromEntries(names.map((n) => [n, `content of ${n}\n`])));
    // The archive node-tar's create would have read for "@evil.tar".
    const evil = tarOf([{ path: 'suid', mode: 0o4755, body: 'x' }]);
    writeFileSync(path.join(dir, 'evil.tar'), evil);
    chmodSync(path.join(dir, 'run.sh'), 0o4755); // setuid on disk: sent as 755
    chmodSync(path.join(dir, '-rf'), 0o600);
    const manifest = await buildManifest(dir, []);
    const paths = manifest.files.map((f) => f[0]);
    expect(paths.sort()).toEqual([...names, 'evil.tar'].sort());
    const entries = await entriesOf(await packFiles(dir, manifest, paths));
    expect(entries.map((e) => e.path)).toEqual(paths);
    for (const [p, , mode] of manifest.files) {
      const e = entries.find((x) => x.path === p)!;
      expect([e.type, e.mode.toString(8), e.uid, e.gid, e.uname ?? '']).toEqual(['File', mode, 0, 0, '']);
    }
    expect(entries.find((e) => e.path === 'run.sh')!.mode).toBe(0o755);
    expect(entries.find((e) => e.path === '-rf')!.mode).toBe(0o644);
    expect(entries.find((e) => e.path === LONG)!.body).toBe(`content of ${LONG}\n`);
    expect(entries.find((e) => e.path === 'evil.tar')!.body).toBe(evil.toString());
  });

  test('only manifest files, each once', async () => {
    tree(dir, { 'a.py': 'a', '.git/config': 'token', 'b.py': 'b' });
    const manifest = await buildManifest(dir, []);
    for (const paths of [['.git/config'], ['../x'], ['a.py', 'a.py'], ['/etc/passwd']])
      await expect(packFiles(dir, manifest, paths)).rejects.toThrow(
        /every path must be a file of the manifest/,
      );
  });

  test.each([
    ['its content', (p: string) => writeFileSync(p, 'changed')],
    ['a link in its place', (p: string) => (unlinkSync(p), symlinkSync('/etc/passwd', p))],
    ['a FIFO in its place', (p: string) => (unlinkSync(p), execFileSync('mkfifo', [p]))],
    ['a directory in its place', (p: string) => (unlinkSync(p), mkdirSync(p))],
    ['its size', (p: string) => writeFileSync(p, 'a longer content')],
  ])('a file that changed after the manifest (%s) fails the packing', async (_what, change) => {
    tree(dir, { 'a.py': 'a = 1\n', 'b.py': 'b = 1\n' });
    const manifest = await buildManifest(dir, []);
    change(path.join(dir, 'b.py'));
    await expect(packFiles(dir, manifest, ['a.py', 'b.py'])).rejects.toThrow(
      'source file b.py changed while the release was being made; run again',
    );
  });
});

describe('the manifest', () => {
  test('a FIFO in the source is refused, naming it', async () => {
    tree(dir, { 'a.py': 'a' });
    execFileSync('mkfifo', [path.join(dir, 'pipe')]);
    await expect(buildManifest(dir, [])).rejects.toThrow(
      'source file pipe is a FIFO: only files, directories and links are deployed; remove it or exclude it',
    );
    await expect(buildManifest(dir, ['pipe'])).resolves.toBeTruthy();
  });

  const refused: [string, [string, string][], string][] = [
    ['an absolute target', [['l', '/etc']], 'source file l is a link to the absolute path /etc'],
    ['a target climbing out', [['l', '../x']], 'source file l leads outside the source directory (../x)'],
    [
      'a climb through a link (up -> ../.., sys -> a/b/up/../etc)',
      [
        ['a/b/up', '../..'],
        ['sys', 'a/b/up/../etc'],
      ],
      'source file sys leads outside the source directory (a/b/up/../etc)',
    ],
    [
      'a chain whose last hop climbs out',
      [
        ['a/b/up', '../..'],
        ['d', 'a/b/up'],
        ['e', 'd/..'],
      ],
      'source file e leads outside the source directory (d/..)',
    ],
    [
      'a chain through a link to an absolute path',
      [
        ['x', '/tmp'],
        ['y', 'x/foo'],
      ],
      'source file x is a link to the absolute path /tmp',
    ],
    [
      'a link into .git',
      [['gc', 'a/../.git/config']],
      'source file gc leads into .git, which is never deployed (.git)',
    ],
    [
      'a link to .env',
      [['config', '.env']],
      'source file config leads into .env, which is never deployed (.env)',
    ],
    [
      'a link to the venv',
      [['py', '.venv/bin/python']],
      'source file py leads into .venv, which is never deployed',
    ],
    [
      'a climb back out of a shared path',
      [['l', 'logs/..']],
      'source file l leads through the shared path logs and back up out of it',
    ],
    [
      'a climb out of a nested shared path the source lacks',
      [['l', 'data/up/../..']],
      'source file l leads through the shared path data/up and back up out of it',
    ],
    [
      'a loop',
      [
        ['l1', 'l2'],
        ['l2', 'l1'],
      ],
      'source file l1 is a loop of links',
    ],
  ];
  test.each(refused)('a link with %s is refused', async (_what, links, message) => {
    tree(dir, { 'a/b/c.py': 'c', '.git/config': 'token' });
    for (const [at, target] of links) symlinkSync(target, path.join(dir, at));
    await expect(buildManifest(dir, [], ['logs', 'data/up', '.env'])).rejects.toThrow(message);
  });

  test('links that stay inside are kept: to files, directories, chains, shared paths, and dangling ones', async () => {
    tree(dir, { 'a/b/c.py': 'c', 'a/d.py': 'd' });
    const links: [string, string][] = [
      ['a/b/up', '..'],
      ['c', 'a/b/up/b/c.py'],
      ['chain', 'c'],
      ['dir', 'a/b'],
      ['media', 'logs/app'],
      ['nowhere', 'missing/../../..'],
      ['through-file', 'a/d.py/../..'],
    ];
    for (const [at, target] of links) symlinkSync(target, path.join(dir, at));
    const manifest = await buildManifest(dir, [], ['logs']);
    expect(manifest.links.sort()).toEqual(links.sort());
  });

  test('a link through an excluded link that climbs out is refused by the runner’s realpath too', async () => {
    tree(dir, { 'a.py': 'a' });
    symlinkSync('..', path.join(dir, 'parent'));
    symlinkSync('parent/x', path.join(dir, 'l'));
    await expect(buildManifest(dir, ['parent'])).rejects.toThrow(
      'source file l leads outside the source directory',
    );
  });
});

describe("the host's answer", () => {
  const manifest: Manifest = {
    files: [
      ['main.py', 'a'.repeat(64), '644', 1],
      ['-rf', 'b'.repeat(64), '644', 1],
    ],
    links: [['l', 'main.py']],
  };
  const answer = (need: unknown, reused: unknown = 2 - (Array.isArray(need) ? need.length : 0), extra = '') =>
    `changed app user shop created\nPREVIOUS 20250101_000000${extra}\n${JSON.stringify({ need, reused })}\n`;

  test('a well-formed answer', () => {
    expect(parsePrepared(answer(['-rf']), manifest)).toEqual({
      previous: '20250101_000000',
      need: ['-rf'],
      reused: 1,
    });
    expect(parsePrepared('PREVIOUS \n{"need": [], "reused": 2}', manifest).previous).toBe('');
  });

  test.each([
    ['.git/config'],
    ['../../../../etc/passwd'],
    ['/etc/passwd'],
    ['./main.py'],
    ['main.py/'],
    ['l'],
    ['.env'],
    [''],
    [7],
    [{ path: 'main.py' }],
    [null],
  ])('a path outside the manifest (%j) is refused, naming it', (p) => {
    expect(() => parsePrepared(answer([p, 'main.py'], 0), manifest)).toThrow(
      `the host asked for ${JSON.stringify(p)}, which is not a file of the manifest: refused, nothing was sent to it`,
    );
  });

  test.each([
    ['a file twice', answer(['main.py', 'main.py'], 0), 'the host asked for "main.py" twice'],
    ['no JSON', 'PREVIOUS x\nall good\n', 'the host did not answer which files it needs'],
    ['JSON of another shape', 'PREVIOUS x\n{"need": "main.py", "reused": 1}\n', 'did not answer'],
    ['a list', '["main.py"]', 'did not answer'],
    ['null', 'null', 'did not answer'],
    ['a fractional count', answer(['main.py'], 0.5), 'did not answer'],
    [
      'a count that does not add up',
      answer(['main.py'], 0),
      'the host claims to reuse 0 files and to need 1 of 2',
    ],
    ['a previous release that is no release id', answer([], 2, '/../../x $(id)'), 'not a release id'],
  ])('%s is refused', (_what, stdout, message) => {
    expect(() => parsePrepared(stdout, manifest)).toThrow(message);
  });
});

describe("the host's unpacking and checks (mstool stage-files, check-files)", () => {
  const MAIN = 'print("hello")\n';
  const UTIL = 'x = 1\n';
  const sha = (s: string) => execFileSync('sha256sum', { input: s, encoding: 'utf8' }).split(' ')[0]!;
  const manifest: Manifest = {
    files: [
      ['main.py', sha(MAIN), '644', MAIN.length],
      ['pkg/util.py', sha(UTIL), '755', UTIL.length],
    ],
    links: [['u', 'pkg/util.py']],
  };
  const good: Member[] = [
    { path: 'main.py', body: MAIN },
    { path: 'pkg/util.py', body: UTIL, mode: 0o755 },
  ];
  const mstool = (args: string[], input: Buffer | string) => runTool(args, { input });
  const release = () => path.join(dir, 'rel');
  function stage() {
    mkdirSync(release());
    const r = mstool(['stage-files', release(), ''], JSON.stringify(manifest));
    expect(r.stdout).toBe('{"need": ["main.py", "pkg/util.py"], "reused": 0}\n');
  }
  const find = () =>
    execFileSync('find', ['.', '-mindepth', '1', '!', '-path', './.metalship*', '-printf', '%y %m %p\\n'], {
      cwd: release(),
      encoding: 'utf8',
    })
      .split('\n')
      .filter(Boolean)
      .sort();

  test('what the runner packs is received and checked; the release holds exactly the manifest', async () => {
    tree(path.join(dir, 'src'), { 'main.py': MAIN, 'pkg/util.py': UTIL });
    chmodSync(path.join(dir, 'src/pkg/util.py'), 0o755);
    symlinkSync('pkg/util.py', path.join(dir, 'src/u'));
    const built = await buildManifest(path.join(dir, 'src'), []);
    expect(built).toEqual(manifest);
    stage();
    const r = mstool(
      ['check-files', release(), 'receive'],
      await packFiles(path.join(dir, 'src'), built, ['main.py', 'pkg/util.py']),
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('2 files received\n2 files verified\n');
    expect(find()).toEqual(['d 755 ./pkg', 'f 644 ./main.py', 'f 755 ./pkg/util.py', 'l 777 ./u']);
  });

  const hostile: [string, Member[], RegExp][] = [
    ['a link', [{ path: 'etc', type: 'SymbolicLink', linkpath: '/etc' }], /'etc': a link/],
    ['a hard link', [{ path: 'main.py', type: 'Link', linkpath: '/etc/shadow' }], /'main.py': a hard link/],
    ['a directory', [{ path: 'pkg', type: 'Directory', mode: 0o755 }], /'pkg': a directory/],
    ['a FIFO', [{ path: 'main.py', type: 'FIFO' }], /'main.py': a FIFO/],
    ['a device', [{ path: 'sda', type: 'BlockDevice', devmaj: 8, devmin: 0 }], /'sda': a device/],
    [
      'a file outside the manifest',
      [{ path: 'extra.py', body: 'x' }],
      /'extra.py': not a file of the manifest/,
    ],
    [
      'a climbing path',
      [{ path: '../../escape.py', body: UTIL }],
      /'..\/..\/escape.py': not a file of the manifest/,
    ],
    ['an absolute path', [{ path: '/etc/cron.d/x', body: UTIL }], /not a file of the manifest/],
    [
      'a setuid manifest file',
      [{ ...good[0]!, mode: 0o4755 }],
      /'main.py': mode 4755, not the manifest's 644/,
    ],
    ['another mode', [{ ...good[1]!, mode: 0o644 }], /mode 644, not the manifest's 755/],
    ['another content', [{ ...good[0]!, body: 'print("evil")\n' }], /'main.py': not the manifest's size/],
    [
      'the same size, another content',
      [{ ...good[0]!, body: 'print("HELLO")\n' }],
      /'main.py': checksum mismatch/,
    ],
    ['a file twice', [good[0]!, good[0]!], /'main.py': the release has it already/],
    ['a file the release reuses', [{ path: 'u', body: UTIL }], /'u': not a file of the manifest/],
  ];
  test.each(hostile)('an upload with %s is refused, and nothing of it stays', (_what, members, message) => {
    stage();
    const r = mstool(['check-files', release(), 'receive'], gzipSync(tarOf(members)));
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(message);
    expect(find().filter((l) => !['d 755 ./pkg', 'l 777 ./u', 'f 644 ./main.py'].includes(l))).toEqual([]);
    if (members[0]!.path === 'main.py' && members.length === 1)
      expect(find()).not.toContain('f 644 ./main.py');
  });

  test('an upload member whose directory is a link in the release is refused, not written through it', () => {
    stage();
    rmSync(path.join(release(), 'pkg'), { recursive: true });
    mkdirSync(path.join(dir, 'elsewhere'));
    symlinkSync(path.join(dir, 'elsewhere'), path.join(release(), 'pkg'));
    const r = mstool(['check-files', release(), 'receive'], gzipSync(tarOf(good)));
    expect(r.stderr).toBe("refused upload member 'pkg/util.py': Not a directory\n");
    expect(execFileSync('ls', ['-A', path.join(dir, 'elsewhere')], { encoding: 'utf8' })).toBe('');
  });

  test('names outside ASCII, long paths and option-like names go through packing and unpacking', async () => {
    const names = ['café/naïve.py', LONG, '-rf', '@x'];
    tree(path.join(dir, 'src'), Object.fromEntries(names.map((n) => [n, `# ${n}\n`])));
    const built = await buildManifest(path.join(dir, 'src'), []);
    mkdirSync(release());
    expect(mstool(['stage-files', release(), ''], JSON.stringify(built)).status).toBe(0);
    const paths = built.files.map((f) => f[0]);
    const r = mstool(
      ['check-files', release(), 'receive'],
      await packFiles(path.join(dir, 'src'), built, paths),
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('4 files received\n4 files verified\n');
  });

  test('an upload that is not a gzipped tar is refused', () => {
    stage();
    const r = mstool(['check-files', release(), 'receive'], 'not a tar');
    expect(r.stderr).toMatch(/the upload is not a complete gzipped tar/);
  });

  test.each([
    [
      'an unlisted file',
      () => writeFileSync(path.join(release(), 'pkg/extra.py'), ''),
      'unlisted file pkg/extra.py',
    ],
    ['an unlisted directory', () => mkdirSync(path.join(release(), 'extra')), 'unlisted directory extra'],
    ['an unlisted link', () => symlinkSync('/etc', path.join(release(), 'etc')), 'unlisted link etc'],
    [
      'a link with another target',
      () => (unlinkSync(path.join(release(), 'u')), symlinkSync('/etc', path.join(release(), 'u'))),
      'unlisted link u',
    ],
    ['a FIFO', () => execFileSync('mkfifo', [path.join(release(), 'p')]), 'special file p'],
    ['a setgid directory', () => chmodSync(path.join(release(), 'pkg'), 0o2755), 'setuid/setgid pkg'],
    ['a setuid file', () => chmodSync(path.join(release(), 'main.py'), 0o4755), 'setuid/setgid main.py'],
  ])('a release holding %s fails the check', (_what, tamper, message) => {
    stage();
    expect(mstool(['check-files', release(), 'receive'], gzipSync(tarOf(good))).status).toBe(0);
    tamper();
    const r = mstool(['check-files', release()], '');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(message);
  });

  test.each([
    ['an absolute path', { files: [['/etc/x', 'a', '644', 1]], links: [] }],
    ['a climbing path', { files: [['a/../../x', 'a', '644', 1]], links: [] }],
    ['a path into .metalship', { files: [['.metalship/status', 'a', '644', 1]], links: [] }],
    ['a link to an absolute path', { files: [], links: [['l', '/etc']] }],
  ])('stage-files refuses a manifest with %s', (_what, bad) => {
    mkdirSync(release());
    const r = mstool(['stage-files', release(), ''], JSON.stringify(bad));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/refused/);
  });
});
