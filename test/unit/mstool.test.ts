// The host's Python tool (src/remote/py/mstool.py), command by command, run
// here as the scripts run it: python3 -I on scratch directories. stage-files
// and check-files are tested with the upload (test/unit/upload.test.ts).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readlinkSync,
  statSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { MSTOOL, UNIX_HTTP_SERVER, mstool } from '../support/mstool.js';
import { rootSandbox } from '../support/sandbox.js';

let dir: string;
beforeEach(() => {
  dir = rootSandbox('mstool');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

// What systemd 252 (Debian 12) put in a service's environment from this
// EnvironmentFile (systemd-run -p EnvironmentFile=... on a test host).
const ENV_FILE = [
  'A="it\'s \\"quoted\\" $(touch /tmp/pwned) `touch /tmp/pwned-bt` back\\slash \\\\ \\$HOME ${PATH}',
  'second line"',
  'B=\'single $(x) \\n "dq" back\\\\slash',
  "line2'",
  'C=plain\\ value\\\\ \\$X $Y "mid"',
  'D="line cont\\',
  'inued"',
  'export E1=one',
  'E2 = two ',
  'E3="a"b c  ',
  '# c',
  'E4=x # not a comment',
  ';semi',
  'E5=`bt`',
  'E6=',
  'E7',
  '',
].join('\n');
const AS_SYSTEMD_READS_IT = {
  A: 'it\'s "quoted" $(touch /tmp/pwned) `touch /tmp/pwned-bt` back\\slash \\ $HOME ${PATH}\nsecond line',
  B: 'single $(x) \\n "dq" back\\\\slash\nline2',
  C: 'plain value\\ $X $Y "mid"',
  D: 'line continued',
  E2: 'two',
  E3: 'ab c',
  E4: 'x # not a comment',
  E5: '`bt`',
  E6: '',
};

describe('read_env: the .env as systemd reads an EnvironmentFile', () => {
  test('exec: the command gets the .env values the services get, as systemd reads them', () => {
    writeFileSync(path.join(dir, '.env'), ENV_FILE);
    const r = mstool([
      'exec',
      dir,
      path.join(dir, '.env'),
      'python3',
      '-c',
      'import json, os; print(json.dumps(dict(os.environ)))',
    ]);
    expect(r.stderr).toBe('');
    const env = JSON.parse(r.stdout) as Record<string, string>;
    const got = Object.fromEntries(Object.entries(env).filter(([k]) => /^(A|B|C|D|E\d|export)/.test(k)));
    expect(got).toEqual(AS_SYSTEMD_READS_IT);
    expect(existsSync('/tmp/pwned') || existsSync('/tmp/pwned-bt')).toBe(false);
  });

  test('import-check imports the app from the release with those values', () => {
    mkdirSync(path.join(dir, 'rel'));
    writeFileSync(path.join(dir, 'rel', 'main.py'), 'import os\napp = os.environ["GREETING"]\n');
    writeFileSync(path.join(dir, '.env'), 'GREETING="hello there"\n');
    const r = mstool(['import-check', path.join(dir, 'rel'), 'main:app', path.join(dir, '.env')]);
    expect(r.stdout).toBe('import ok: main:app\n');
    writeFileSync(path.join(dir, '.env'), '');
    expect(
      mstool(['import-check', path.join(dir, 'rel'), 'main:app', path.join(dir, '.env')]).stderr,
    ).toMatch(/KeyError: 'GREETING'/);
  });
});

describe('link', () => {
  test('replaces a link by rename, never leaving the path missing, and reads it back', () => {
    const link = path.join(dir, 'current');
    expect(mstool(['link', 'releases/a', link]).status).toBe(0);
    expect(readlinkSync(link)).toBe('releases/a');
    // A temporary name a killed run left is no obstacle.
    symlinkSync('stale', `${link}.tmp-0`);
    expect(mstool(['link', 'releases/b', link]).status).toBe(0);
    expect(readlinkSync(link)).toBe('releases/b');
  });

  test('several links in one run, each pair in turn; an odd count changes nothing', () => {
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    expect(mstool(['link', 't1', a, 't2', b]).status).toBe(0);
    expect([readlinkSync(a), readlinkSync(b)]).toEqual(['t1', 't2']);
    const r = mstool(['link', 't3', a, 't4']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('TARGET PATH pairs expected');
    expect(readlinkSync(a)).toBe('t1');
  });

  test('a directory where the link should be is not followed into', () => {
    const link = path.join(dir, 'current');
    mkdirSync(link);
    const r = mstool(['link', 'releases/a', link]);
    expect(r.status).not.toBe(0);
    expect(existsSync(path.join(link, 'releases'))).toBe(false);
  });
});

describe('pg-exec: DATABASE_URL to PG* variables, its password masked', () => {
  const PRINT_ENV =
    'import json, os, sys; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith("PG")})); ' +
    'sys.stderr.write("FATAL: password authentication failed: p@ss/wörd and p%40ss%2Fw%C3%B6rd\\n"); sys.exit(3)';
  const run = (url: string | null) => {
    // In double quotes when it holds a single quote (systemd's escapes).
    const quoted = url?.includes("'") ? `"${url.replace(/[\\"$`]/g, '\\$&')}"` : `'${url}'`;
    writeFileSync(path.join(dir, '.env'), url === null ? 'OTHER=1\n' : `DATABASE_URL=${quoted}\n`);
    return mstool(['pg-exec', path.join(dir, '.env'), 'python3', '-c', PRINT_ENV]);
  };

  test('splits the URL as libpq does, passes the exit code, and masks the password in what the client says', () => {
    const r = run(
      'postgresql+asyncpg://shop:p%40ss%2Fw%C3%B6rd@db1:5433,[::1]/shop%20db?ssl=true&application_name=web&statement_cache_size=0',
    );
    expect(r.status).toBe(3);
    expect(JSON.parse(r.stdout)).toEqual({
      PGUSER: 'shop',
      PGPASSWORD: 'p@ss/wörd',
      PGHOST: 'db1,::1',
      PGPORT: '5433,5432',
      PGDATABASE: 'shop db',
      PGSSLMODE: 'require',
      PGAPPNAME: 'web',
    });
    expect(r.stderr).toContain('FATAL: password authentication failed: *** and ***');
    expect(r.stderr).toContain('note: DATABASE_URL has 1 parameter(s) that psql and pg_dump do not know');
    expect(r.stderr).not.toMatch(/p@ss|p%40ss/);
  });

  test("libpq's keyword=value string, split as libpq splits it, its password masked", () => {
    const r = run("host = /run/postgresql port=5433 user=shop password=p@ss/w\\örd dbname='shop db'");
    expect(r.status).toBe(3);
    expect(JSON.parse(r.stdout)).toEqual({
      PGHOST: '/run/postgresql',
      PGPORT: '5433',
      PGUSER: 'shop',
      PGPASSWORD: 'p@ss/wörd',
      PGDATABASE: 'shop db',
    });
    expect(r.stderr).toContain('FATAL: password authentication failed: *** and');
  });

  test('a socket URL without user or password sets only the database', () => {
    expect(JSON.parse(run('postgresql:///shop').stdout)).toEqual({ PGDATABASE: 'shop' });
  });

  test.each([
    ['mysql://u:s3cr3t-pw@h/db', /DATABASE_URL is not a postgresql:\/\/ URL/],
    ['postgresql://u:s3cr3t/pw@h/db', /has an @ after its first \//],
    ['postgresql://u:s3cr3t-pw@h/db?ssl=maybe', /its ssl= parameter has a value libpq does not know/],
    ['user=u password=s3cr3t-pw dbname', /a keyword without =/],
    ["user=u password='s3cr3t-pw", /never closed/],
  ])('%s is refused without quoting it', (url, why) => {
    const r = run(url);
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(why);
    expect(r.stderr).not.toContain('s3cr3t');
  });

  test('a .env without DATABASE_URL is refused, naming the file', () => {
    const r = run(null);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(`DATABASE_URL is not set in ${dir}/.env`);
  });
});

describe('check-sealed', () => {
  function venv(): string {
    const root = path.join(dir, 'venv');
    mkdirSync(path.join(root, 'lib', 'site-packages'), { recursive: true });
    writeFileSync(
      path.join(root, 'lib', 'site-packages', 'ok.pth'),
      '# a comment\nimport site\n../elsewhere\n',
    );
    mkdirSync(path.join(root, 'lib', 'elsewhere'));
    symlinkSync('/usr/bin/python3', path.join(root, 'python'));
    return root;
  }

  test("a virtualenv that is root's and leads nowhere others can change is sealed", () => {
    const r = mstool(['check-sealed', venv()]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  test('a writable file, a set-id bit, another owner, a link or a .pth path to /tmp are each named', () => {
    const root = venv();
    writeFileSync(path.join(root, 'writable.py'), '');
    chmodSync(path.join(root, 'writable.py'), 0o666);
    writeFileSync(path.join(root, 'setuid'), '');
    chmodSync(path.join(root, 'setuid'), 0o4755);
    writeFileSync(path.join(root, 'theirs.py'), '');
    chownSync(path.join(root, 'theirs.py'), 65534, 65534);
    symlinkSync('/tmp', path.join(root, 'lib', 'tmp-link'));
    writeFileSync(path.join(root, 'lib', 'site-packages', 'evil.pth'), '/tmp\n');
    const r = mstool(['check-sealed', root]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/writable\.py is not sealed \(owner 0, mode 666\)/);
    expect(r.stderr).toMatch(/setuid is not sealed \(owner 0, mode 4755\)/);
    expect(r.stderr).toMatch(/theirs\.py is not sealed \(owner 65534, mode 644\)/);
    expect(r.stderr).toMatch(/tmp-link leads to \/tmp/);
    expect(r.stderr).toMatch(/evil\.pth adds \/tmp to the path/);
  });
});

describe("pip-runner: pip unpacked once, root's and compiled, for venvs made without one", () => {
  const py = (code: string, ...flags: string[]) =>
    spawnSync('python3', [...flags, '-c', code], { encoding: 'utf8' }).stdout.trim();
  const before312 = py('import sys; print(sys.version_info < (3, 12))') === 'True';
  const tag = py('import sys; print(sys.implementation.cache_tag)');
  const run = (cache: string, flags: string[] = [], pyFlags: string[] = []) =>
    spawnSync('python3', ['-I', ...pyFlags, MSTOOL, 'pip-runner', cache, ...flags], { encoding: 'utf8' });

  test("unpacks only pip/ of the wheel ensurepip uses, compiled, root's and read-only, and reuses it", () => {
    const cache = path.join(dir, 'runner');
    const r = run(cache);
    expect(r.stderr).toBe('');
    const [runner, ...extra] = r.stdout.trim().split('\n');
    expect(runner).toMatch(new RegExp(`^${cache}/${tag}-pip-[0-9.]+-[^/]+-[0-9a-f]{16}$`));
    expect(readdirSync(runner!).sort()).toEqual(['.complete', 'pip']);
    expect(existsSync(path.join(runner!, 'pip', '__pycache__', `__init__.${tag}.pyc`))).toBe(true);
    for (const p of [runner!, path.join(runner!, 'pip', '__init__.py')]) {
      const st = statSync(p);
      expect({ uid: st.uid, writable: st.mode & 0o022 }).toEqual({ uid: 0, writable: 0 });
    }
    // It runs (as the build runs it: python DIR/pip).
    expect(
      spawnSync('python3', [path.join(runner!, 'pip'), '--version'], { encoding: 'utf8' }).stdout,
    ).toContain(`${runner}/pip`);
    // ensurepip installed setuptools too before Python 3.12.
    expect(extra.some((w) => /\/setuptools-[0-9.]+-.*\.whl$/.test(w))).toBe(before312);
    const mark = statSync(path.join(runner!, '.complete')).mtimeMs;
    expect(run(cache).stdout).toBe(r.stdout);
    expect(statSync(path.join(runner!, '.complete')).mtimeMs).toBe(mark);
  });

  test("setuptools for a venv with the system's site-packages only when the system has none", () => {
    const cache = path.join(dir, 'runner');
    const systemHas = py(
      'import importlib.util; print(importlib.util.find_spec("setuptools") is not None)',
      '-I',
    );
    const offered = (r: ReturnType<typeof run>) => /\/setuptools-[^/]*\.whl$/m.test(r.stdout);
    expect(offered(run(cache, ['system-site']))).toBe(before312 && systemHas !== 'True');
    // Without the system's site-packages (-S), the system has none to offer.
    expect(offered(run(cache, ['system-site'], ['-S']))).toBe(before312);
  });

  test('what a run cut short left goes; a cache another user could change is refused', () => {
    const cache = path.join(dir, 'runner');
    const runner = run(cache).stdout.split('\n')[0]!;
    rmSync(path.join(runner, '.complete'));
    writeFileSync(path.join(runner, 'pip', 'planted.py'), 'raise SystemExit("planted")\n');
    mkdirSync(path.join(cache, '.tmp-left'));
    expect(run(cache).stdout.split('\n')[0]).toBe(runner);
    expect(existsSync(path.join(runner, 'pip', 'planted.py'))).toBe(false);
    expect(existsSync(path.join(cache, '.tmp-left'))).toBe(false);
    const open = path.join(dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const refused = run(path.join(open, 'runner'));
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/is not root's alone/);
  });
});

describe('releases', () => {
  test('lists each release with its status, venv and revisions, the links and the venvs', () => {
    const rel = (id: string) => path.join(dir, 'releases', id, '.metalship');
    mkdirSync(rel('a'), { recursive: true });
    mkdirSync(rel('b'), { recursive: true });
    mkdirSync(path.join(dir, 'venvs', 'py-1'), { recursive: true });
    mkdirSync(path.join(dir, 'slots'));
    writeFileSync(path.join(rel('a'), 'status'), 'ready\n');
    writeFileSync(
      path.join(rel('a'), 'release.json'),
      JSON.stringify({ revision: 'abc123', created_epoch: 7 }),
    );
    writeFileSync(path.join(rel('a'), 'schema-revision'), '0002\n');
    writeFileSync(path.join(rel('a'), 'runtime.json'), '{}');
    writeFileSync(path.join(rel('a'), 'served'), 'now');
    // Recorded but never current: only built (the fleet's <id>-migrate).
    mkdirSync(rel('c'), { recursive: true });
    writeFileSync(path.join(rel('c'), 'status'), 'ready\n');
    writeFileSync(path.join(rel('c'), 'runtime.json'), '{}');
    symlinkSync('../../venvs/py-1', path.join(dir, 'releases', 'a', '.venv'));
    symlinkSync('releases/a', path.join(dir, 'current'));
    symlinkSync('../releases/b/', path.join(dir, 'slots', 'blue'));
    // Not releases: a stray file and a link.
    writeFileSync(path.join(dir, 'releases', 'stray'), '');
    symlinkSync('a', path.join(dir, 'releases', 'alias'));
    const r = mstool(['releases', dir]);
    const listing = JSON.parse(r.stdout) as {
      releases: Array<Record<string, unknown>>;
      links: Record<string, string>;
      venvs: string[];
    };
    expect(listing.releases.sort((x, y) => String(x.id).localeCompare(String(y.id)))).toEqual([
      {
        id: 'a',
        status: 'ready',
        created: 7,
        venv: 'py-1',
        revision: 'abc123',
        schema_revision: '0002',
        served: true,
      },
      {
        id: 'b',
        status: 'incomplete',
        created: expect.any(Number) as number,
        venv: '',
        revision: '',
        schema_revision: '',
        served: true,
      },
      expect.objectContaining({ id: 'c', status: 'ready', served: false }),
    ]);
    expect(listing.links).toEqual({ current: 'a', 'slots/blue': 'b' });
    expect(listing.venvs).toEqual(['py-1']);
  });
});

describe('wait-ready', () => {
  let server: ChildProcess | undefined;
  afterEach(() => server?.kill());

  async function serve(sock: string): Promise<void> {
    server = spawn('python3', ['-c', UNIX_HTTP_SERVER, sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve) => server!.stdout!.once('data', resolve));
  }

  test('answers once the path gives the status and the text', async () => {
    const sock = path.join(dir, 'api.sock');
    await serve(sock);
    const r = mstool(['wait-ready', sock, '/health', '5', '0.1', '200', 'ready']);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, attempts: 1, status: 200, body: 'ready v1' });
  });

  test('gives up after the timeout with what it got last', async () => {
    const sock = path.join(dir, 'api.sock');
    await serve(sock);
    const r = mstool(['wait-ready', sock, '/other', '2', '0.1', '200', '']);
    expect(r.status).toBe(1);
    const out = JSON.parse(r.stdout) as { ok: boolean; attempts: number; status: number; body: string };
    expect(out).toMatchObject({ ok: false, status: 503, body: 'starting' });
    expect(out.attempts).toBeGreaterThan(1);
  });

  // Answers the way servers answer an HTTP/1.0 request, and the ways they may not:
  // no Content-Length (the body ends at the close), a Content-Length on a
  // connection kept open, a body larger than what is read. Echoes the Host.
  const RAW_SERVER = `
import socket, sys, threading
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(8)
print('listening', flush=True)
def handle(c):
    req = b''
    while b'\\r\\n\\r\\n' not in req:
        req += c.recv(1024)
    line = req.split(b'\\r\\n')[0].decode()
    host = [h for h in req.decode().split('\\r\\n') if h.lower().startswith('host:')][0][5:].strip()
    path = line.split(' ')[1]
    if path == '/close':
        c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nno length, host ' + host.encode())
        c.close()
    elif path == '/kept-open':
        body = b'length given, kept open'
        c.sendall(b'HTTP/1.1 200 OK\\r\\ncontent-length: %d\\r\\n\\r\\n' % len(body) + body)
        threading.Event().wait(30)
    elif path == '/endless':
        c.sendall(b'HTTP/1.1 200 OK\\r\\n')
        try:
            while True:
                c.sendall(b'X-More: ' + b'y' * 1000 + b'\\r\\n')
        except OSError:
            pass
    elif path == '/big':
        c.sendall(b'HTTP/1.1 200 OK\\r\\n\\r\\n' + b'x' * 5000 + b'tail')
        threading.Event().wait(30)
    else:
        c.sendall(b'garbage\\r\\n\\r\\n')
        c.close()
while True:
    conn, _ = s.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
`;

  test('reads an answer however it ends: at the close, at its Content-Length, or after 4096 bytes', async () => {
    const sock = path.join(dir, 'raw.sock');
    server = spawn('python3', ['-c', RAW_SERVER, sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve) => server!.stdout!.once('data', resolve));
    const ask = (p: string, expect = '') =>
      mstool(['wait-ready', sock, p, '3', '0.1', '200', expect, 'shop.example']);
    const closed = ask('/close', 'host shop.example');
    expect(JSON.parse(closed.stdout)).toMatchObject({
      ok: true,
      attempts: 1,
      body: 'no length, host shop.example',
    });
    // Neither waits for the close the server never makes (a timeout would be attempts > 1).
    expect(JSON.parse(ask('/kept-open', 'kept open').stdout)).toMatchObject({ ok: true, attempts: 1 });
    const big = JSON.parse(ask('/big').stdout) as { ok: boolean; attempts: number; body: string };
    expect(big).toMatchObject({ ok: true, attempts: 1 });
    // Only the first 4096 bytes count: a text after them is not found.
    expect(JSON.parse(ask('/big', 'tail').stdout)).toMatchObject({ ok: false });
    // Headers without end: read up to a bound, then given up on.
    expect(JSON.parse(mstool(['wait-ready', sock, '/endless', '0', '0.1', '200', '']).stdout)).toMatchObject({
      ok: false,
      status: 0,
      body: expect.stringMatching(/no complete HTTP answer/) as string,
    });
    const junk = mstool(['wait-ready', sock, '/junk', '0', '0.1', '200', '']);
    expect(JSON.parse(junk.stdout)).toMatchObject({
      ok: false,
      status: 0,
      body: expect.stringMatching(/not an HTTP answer/) as string,
    });
  });

  test('a path with a space or a line break is never sent', () => {
    const r = mstool(['wait-ready', path.join(dir, 'none.sock'), '/a\r\nX-Evil: 1', '0', '0.1', '200', '']);
    expect(JSON.parse(r.stdout)).toMatchObject({
      ok: false,
      status: 0,
      body: expect.stringMatching(/line breaks/) as string,
    });
  });

  test('a socket that is not there is status 0, with the reason', () => {
    const r = mstool(['wait-ready', path.join(dir, 'none.sock'), '/health', '0', '0.1', '200', '']);
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({
      ok: false,
      attempts: 1,
      status: 0,
      body: expect.stringMatching(/^FileNotFoundError/) as string,
    });
  });
});

describe('in-use: the logins a service uses, as its clients read them, hashed', () => {
  const sha = (p: string) => createHash('sha256').update(p).digest('hex');
  const me = userInfo().username;
  const cases: [string, string[]][] = [
    ['DATABASE_URL=postgresql://shop:pw%40one@127.0.0.1/shop', [`DATABASE_URL shop ${sha('pw@one')} f`]],
    [
      'DATABASE_URL=postgresql+psycopg://shop@/shop?password=pw-two&host=/run/postgresql',
      [`DATABASE_URL shop ${sha('pw-two')} f`],
    ],
    [
      'DATABASE_URL=postgresql:///shop\nPGPASSWORD=pw-three\nPGUSER=other',
      [`DATABASE_URL other ${sha('pw-three')} f`],
    ],
    ['DATABASE_URL=postgres://:pw-four@db/shop', [`DATABASE_URL ${me} ${sha('pw-four')} f`]],
    ['DATABASE_URL=postgresql:///shop', []],
    [
      `DATABASE_URL="host=127.0.0.1 user = shop password='pw five\\\\'s' dbname=shop"`,
      [`DATABASE_URL shop ${sha("pw five's")} f`],
    ],
    ['DATABASE_URL=dbname=shop\nPGPASSWORD=pw-six', [`DATABASE_URL ${me} ${sha('pw-six')} f`]],
    ['REDIS_URL=redis://shop:r%20one@127.0.0.1:6379/0', [`REDIS_URL shop ${sha('r one')} f`]],
    ['REDIS_URL=rediss://:r-two@cache/0', [`REDIS_URL default ${sha('r-two')} f`]],
    [
      'REDIS_URL=redis://127.0.0.1:6379/0?password=r-three&username=app',
      [`REDIS_URL app ${sha('r-three')} f`],
    ],
    ['REDIS_URL=redis://127.0.0.1:6379/0', []],
  ];
  test.each(cases)('%s', (env, expected) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'in-use-'));
    try {
      writeFileSync(path.join(dir, '.env'), env + '\n');
      const r = mstool([
        'in-use',
        'file',
        path.join(dir, '.env'),
        'f',
        'file',
        path.join(dir, 'missing'),
        'g',
      ]);
      expect(r.stderr).toBe('');
      expect(r.stdout.split('\n').filter(Boolean)).toEqual(expected);
      expect(r.stdout).not.toMatch(/pw-|r-t|r one|pw@/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a running process's environment, each login once", () => {
    const child = spawn('sleep', ['30'], {
      env: { REDIS_URL: 'redis://shop:proc-pw@x/0', DATABASE_URL: 'postgresql://shop:db-pw@x/shop' },
    });
    try {
      const r = mstool([
        'in-use',
        'env',
        String(child.pid),
        'unit-a',
        'env',
        String(child.pid),
        'unit-a',
        'env',
        '999999999',
        'gone',
      ]);
      expect(r.stdout.split('\n').filter(Boolean).sort()).toEqual([
        `DATABASE_URL shop ${sha('db-pw')} unit-a`,
        `REDIS_URL shop ${sha('proc-pw')} unit-a`,
      ]);
    } finally {
      child.kill();
    }
  });
});
