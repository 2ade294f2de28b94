// Trust boundaries on a real host, each tried as an attacker would (see
// docs/threat-model.md): the app user plants links where root acts, the app's
// own code turns on the restore test, package build code wants root, and any
// local user reads command lines. Each of these failed on the code before the fix.
import { execFileSync } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { backupNowStep, defaultBackupDir } from '../../src/remote/backup.js';
import { wrapScript } from '../../src/remote/session.js';
import {
  connectionInputs,
  e2eState,
  onHost,
  registerSecret,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  setUpAppOnHost,
  type E2EState,
} from '../support/e2e.js';

const APP = 'trusty';
// A '?' in it: a URL parser that splits at the first '?' would print the rest.
const DB_PASSWORD = 'Trusty?db-Pw-7731';
const ROOT = `/opt/${APP}`;
let state: E2EState;
let host: E2EState['hosts'][0];
let source: string;

function inputs(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs(APP, source),
    'server-name': 'trusty.test',
    migrate: 'true',
    'migrate-command': 'python -m dbmigrate upgrade head',
    'revision-command': 'python -m dbmigrate current',
    'restore-proof-days': '0',
    ...extra,
  };
}

/** Changes a file the migration runs (a comment): the deploy then migrates rather than skipping unchanged files. */
async function changeMigration(tag: string): Promise<void> {
  await appendFile(path.join(source, 'dbmigrate.py'), `\n# ${tag}\n`);
}

/** A bundle run that must succeed: its output is shown when it did not. */
function expectOk(r: { code: number; log: string }): void {
  expect({ code: r.code, out: r.code ? r.log.split('\n').slice(-40).join('\n') : '' }).toEqual({
    code: 0,
    out: '',
  });
}

/** Runs a shell command on the host as the app user (the attacker of most tests here). */
const asApp = (cmd: string) => onHost(state, host, `runuser -u ${APP} -- sh -c ${JSON.stringify(cmd)}`);

/** Owner and mode of a path on the host, not following a final link. */
const stat = async (p: string) => (await onHost(state, host, `stat -c '%U %a' ${p}`)).trim();

beforeAll(async () => {
  state = e2eState();
  host = state.hosts[2]!;
  source = await sampleAppCopy('trust');
  registerSecret('the database password of trusty', DB_PASSWORD);
  await setUpAppOnHost(state, host, APP, { redisDb: 9, dbPassword: DB_PASSWORD });
  const first = await runBundle('deploy', inputs());
  expectOk(first);
});

afterAll(async () => {
  await rm(source, { recursive: true, force: true });
});

test('a link the app user plants under shared/ never makes root hand a system directory over', async () => {
  // shared/ is the app's: it may put links there, to places root owns.
  const before = await stat('/etc/sudoers.d /etc/ssh');
  expect(before).toBe('root 755\nroot 755');
  await asApp(`rm -rf ${ROOT}/shared/logs && ln -s /etc/sudoers.d ${ROOT}/shared/logs`);
  const r = await runBundle('deploy', inputs()).finally(() =>
    asApp(`rm -f ${ROOT}/shared/logs && mkdir ${ROOT}/shared/logs`),
  );
  expectOk(r);
  expect(await stat('/etc/sudoers.d')).toBe('root 755');
  // A shared path below a planted link: made by the app user, so it fails
  // where the app user may not write, and names the place.
  await asApp(`ln -s /etc/ssh ${ROOT}/shared/data`);
  const nested = await runBundle(
    'deploy',
    inputs({ 'shared-paths': 'logs\nuploads\n.env\ndata/keys' }),
  ).finally(() => asApp(`rm -f ${ROOT}/shared/data`));
  expect(nested.code).toBe(1);
  expect(nested.log).toContain(
    `mkdir: cannot create directory '${ROOT}/shared/data/keys': Permission denied`,
  );
  expect(await stat('/etc/sudoers.d /etc/ssh')).toBe(before);
  expect(await onHost(state, host, 'test -e /etc/ssh/keys && echo made || echo absent')).toBe('absent\n');
  // The tree root acts on is root's; the state directory has one mode.
  expect(await stat(`${ROOT} ${ROOT}/releases ${ROOT}/.metalship`)).toBe('root 755\nroot 755\nroot 700');
});

test('pre-migration backups live outside the app tree, root-only, and a planted link does not redirect them', async () => {
  // Where the backups went before: the app user points that place somewhere else.
  // (It cannot delete root's directory there, but it may rename it: shared/ is its own.)
  await asApp(
    `mv -T ${ROOT}/shared/backups ${ROOT}/shared/backups.old 2>/dev/null; ln -s /var/lib/trusty-loot ${ROOT}/shared/backups`,
  );
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v-backup"\n');
  await changeMigration('v-backup');
  const r = await runBundle('deploy', inputs()).finally(() => asApp(`rm -f ${ROOT}/shared/backups`));
  expectOk(r);
  const backup = /^.*BACKUP (\S+) /m.exec(r.stdout)?.[1] ?? '';
  expect(backup).toMatch(
    new RegExp(`^/var/backups/metalship/${APP}/pre-migrate/${APP}_.*_pre-migrate\\.dump$`),
  );
  expect(await stat(`${backup} ${backup}.sha256 ${path.dirname(backup)}`)).toBe(
    'root 600\nroot 600\nroot 700',
  );
  expect(await onHost(state, host, 'test -e /var/lib/trusty-loot && echo made || echo absent')).toBe(
    'absent\n',
  );
});

test('no local user sees a database password on a command line during a migration or a restore test', async () => {
  // Any local user reads every command line (ps). Sample them as nobody while
  // a deploy migrates (psql, pg_dump) and a restore test runs its smoke test.
  await onHost(
    state,
    host,
    `rm -f /tmp/trust-ps.log /tmp/trust-ps.stop; (runuser -u nobody -- sh -c 'while [ ! -e /tmp/trust-ps.stop ]; do ps -eo args; sleep 0.02; done' > /tmp/trust-ps.log 2>&1 &)`,
  );
  await writeFile(path.join(source, 'version.py'), 'VERSION = "v-ps"\n');
  await changeMigration('v-ps');
  const deploy = await runBundle('deploy', inputs());
  expectOk(deploy);
  await takeBackup();
  const verify = await runBundle('backup-verify', backupVerifyInputs());
  expectOk(verify);
  expect(verify.outputs.verified).toBe('true');
  await onHost(state, host, 'touch /tmp/trust-ps.stop; sleep 0.2');
  const seen = await onHost(state, host, 'cat /tmp/trust-ps.log');
  expect(seen).not.toContain(DB_PASSWORD);
  // The restore test's temporary role and its random password.
  expect(seen).not.toMatch(/metalship_verify_[0-9a-f]{8}:[0-9a-f]+@/);
  expect(seen).not.toMatch(/-v password=/);
  // The sampling did see the work: the migration's psql and the smoke test's uvicorn.
  expect(seen).toMatch(/\bpsql\b/);
  expect(seen).toMatch(/uvicorn main:app --uds \/run\/metalship-verify-smoke/);
});

test("the app's own code cannot make the restore test print a root-only file", async () => {
  // The restore test starts the current release as the app user. A hostile
  // release finds where its output goes and swaps it for a link to a file only
  // root may read, then fails, so that root prints "its output".
  await onHost(state, host, 'umask 077; echo root-only-marker-5521 > /root/trust-secret');
  await writeFile(
    path.join(source, 'sitecustomize_trust.py'),
    `import os, sys
if '--uds' in sys.argv and 'metalship-verify-smoke' in sys.argv[sys.argv.index('--uds') + 1]:
    d = os.path.dirname(sys.argv[sys.argv.index('--uds') + 1])
    for where in (d, os.path.dirname(d)):
        for name in ('app.log', 'log'):
            p = os.path.join(where, name)
            try:
                os.unlink(p)
            except OSError:
                pass
            try:
                os.symlink('/root/trust-secret', p)
            except OSError:
                pass
    sys.exit(3)
`,
  );
  const main = await readFile(path.join(source, 'main.py'), 'utf8');
  await writeFile(path.join(source, 'main.py'), `import sitecustomize_trust  # noqa: F401\n${main}`);
  const deploy = await runBundle('deploy', inputs());
  expectOk(deploy);
  await takeBackup();
  const verify = await runBundle('backup-verify', backupVerifyInputs({ 'smoke-timeout': '10' }));
  expect(verify.code).toBe(1);
  expect(verify.log).toMatch(/the smoke test failed/);
  expect(verify.log).not.toContain('root-only-marker-5521');
  await onHost(state, host, 'rm -f /root/trust-secret');
});

/**
 * Releases the app with one more requirement, built from source: an sdist whose
 * setup.py (run while pip builds it) is `setupPy`. Returns the release run.
 */
async function releaseWithPackage(id: string, setupPy: string) {
  const pkg = await mkdtemp(path.join(tmpdir(), 'metalship-evilpkg-'));
  const name = id.replace(/[^a-z0-9]/g, '');
  await mkdir(path.join(pkg, `${name}-1.0`));
  await writeFile(
    path.join(pkg, `${name}-1.0`, 'setup.py'),
    `import os, sys, sysconfig\nfrom setuptools import setup\n${setupPy}\nsetup(name='${name}', version='1.0', py_modules=[])\n`,
  );
  await writeFile(
    path.join(pkg, `${name}-1.0`, 'PKG-INFO'),
    `Metadata-Version: 1.0\nName: ${name}\nVersion: 1.0\n`,
  );
  const tarball = `${name}-1.0.tar.gz`;
  execFileSync('tar', ['-C', pkg, '-czf', path.join(source, tarball), `${name}-1.0`]);
  await rm(pkg, { recursive: true, force: true });
  const requirements = await readFile(path.join(source, 'requirements.txt'), 'utf8');
  await writeFile(
    path.join(source, 'requirements.txt'),
    `${requirements}${ROOT}/releases/${id}/${tarball}\n`,
  );
  try {
    return await runBundle(
      'release',
      {
        ...connectionInputs(state, [host]),
        ...sampleAppInputs(APP, source),
        'release-id': id,
        'pip-args': '--no-index --no-build-isolation',
      },
      { idleMs: 300000 },
    );
  } finally {
    await writeFile(path.join(source, 'requirements.txt'), requirements);
    await rm(path.join(source, tarball));
  }
}

test('package build code (setup.py) never runs as root, nor as the app user', async () => {
  // It records who it runs as where it may write (its venv), and tries root's home.
  const r = await releaseWithPackage(
    'trust-build-1',
    `open(os.path.join(sysconfig.get_paths()['purelib'], 'trust-uid'), 'w').write('%d %d' % (os.getuid(), os.geteuid()))
import glob
for p in ['/root/trust-setup-pwned'] + glob.glob('/var/cache/metalship/.pip-runner/*/pip/__init__.py'):
    try:
        open(p, 'a').write('# pwned')
    except OSError:
        pass`,
  );
  expectOk(r);
  // pip ran from root's compiled copy of the system's wheel, which the build could not change;
  // the venv has no pip of its own (nothing installs into a sealed venv).
  expect(
    await onHost(
      state,
      host,
      'find /var/cache/metalship/.pip-runner \\( ! -user root -o -perm /022 \\) -print; grep -rl pwned /var/cache/metalship/.pip-runner || true',
    ),
  ).toBe('');
  expect(
    await onHost(state, host, 'ls -d /var/cache/metalship/.pip-runner/*/pip/__pycache__ | wc -l'),
  ).not.toBe('0\n');
  const venv = (await onHost(state, host, `readlink ${ROOT}/releases/trust-build-1/.venv`)).trim();
  const [uid, euid] = (await onHost(state, host, `cat ${venv}/lib/python3*/site-packages/trust-uid`)).split(
    ' ',
  );
  expect(await onHost(state, host, 'test -e /root/trust-setup-pwned && echo pwned || echo absent')).toBe(
    'absent\n',
  );
  expect(uid).not.toBe('0');
  expect(
    await onHost(state, host, `ls ${venv}/bin ${venv}/lib/python3*/site-packages | grep -c '^pip' || true`),
  ).toBe('0\n');
  const buildUid = (await onHost(state, host, `id -u ${APP}-build`)).trim();
  expect({ uid, euid }).toEqual({ uid: buildUid, euid: buildUid });
  // The venv it built is sealed: root's, and nothing in it writable by others or set-id.
  expect(await stat(venv)).toBe('root 755');
  expect(
    await onHost(state, host, `find ${venv} \\( ! -user root -o -perm /6022 \\) ! -type l -print | head -5`),
  ).toBe('');
});

test('package build code leaves nothing behind: no process, no cron job, no file outside its venv', async () => {
  const r = await releaseWithPackage(
    'trust-build-2',
    `import subprocess
subprocess.Popen(['sleep', '600'], start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.run(['sh', '-c', 'echo "* * * * * id > /var/tmp/trust-cron-ran" | crontab -'])
for p in ('/tmp/trust-leftover', '/var/tmp/trust-leftover', '/opt/trust-leftover', '/var/cache/metalship/trust-leftover'):
    try:
        open(p, 'w').write('x')
    except OSError:
        pass`,
  );
  expectOk(r);
  const user = `${APP}-build`;
  expect(await onHost(state, host, `pgrep -u ${user} -a || echo none`)).toBe('none\n');
  expect(await onHost(state, host, `crontab -l -u ${user} 2>&1 || true`)).toMatch(/no crontab/);
  expect(
    await onHost(
      state,
      host,
      'ls -d /tmp/trust-leftover /var/tmp/trust-leftover /opt/trust-leftover /var/cache/metalship/trust-leftover 2>/dev/null || echo none',
    ),
  ).toBe('none\n');
});

test('a venv that would lead to a place another user can change is refused', async () => {
  // A .pth line adds its directory to sys.path of every python the app runs.
  const r = await releaseWithPackage(
    'trust-build-3',
    `open(os.path.join(sysconfig.get_paths()['purelib'], 'zz_trust.pth'), 'w').write('/var/tmp/trust-plant\\n')`,
  );
  expect(r.code).toBe(1);
  expect(r.log).toMatch(/the virtualenv leads to places another user could change/);
  expect(r.log).toMatch(/zz_trust\.pth adds \/var\/tmp\/trust-plant to the path/);
});

test("a FIFO or a link a package plants among the venv's packages is never opened by root: the release is refused, and nothing of what the link leads to reaches the log", async () => {
  // Root opening the FIFO would wait for a writer for ever, holding the deploy lock. (Named
  // as root's check looks for them, and as neither Python, pip nor compileall opens: a FIFO
  // .pth, .egg-link or .py hangs the build's own Python first, the package hanging its own build.)
  // A root-only file whose line, read as a .pth line, names a place anyone can change:
  // the seal check reading it through the link would quote it in its refusal.
  const secret = `metalship-e2e-secret-${process.pid}-${Date.now()}`;
  await onHost(state, host, `umask 077; echo /var/tmp/${secret} > /etc/metalship-e2e-secret`);
  const r = await releaseWithPackage(
    'trust-build-4',
    `purelib = sysconfig.get_paths()['purelib']
if not os.path.exists(os.path.join(purelib, '__editable__zz_fifo')):
    os.mkfifo(os.path.join(purelib, '__editable__zz_fifo'))
    os.symlink('/etc/metalship-e2e-secret', os.path.join(purelib, 'zz_link.pth'))`,
  );
  expect(r.code).toBe(1);
  expect(r.log).toMatch(/zz_link\.pth is a link: a \.pth file must be a file of the venv/);
  expect(r.log).not.toContain(secret);
});

test('a package installed in editable mode (-e) is refused: it would point into the build copy, which goes', async () => {
  const pkg = path.join(source, 'edpkg');
  await mkdir(pkg, { recursive: true });
  await writeFile(
    path.join(pkg, 'setup.py'),
    "from setuptools import setup\nsetup(name='edpkg', version='1.0', py_modules=['edpkg'])\n",
  );
  await writeFile(path.join(pkg, 'edpkg.py'), 'VALUE = 1\n');
  const requirements = await readFile(path.join(source, 'requirements.txt'), 'utf8');
  await writeFile(path.join(source, 'requirements.txt'), `${requirements}-e ./edpkg\n`);
  try {
    const r = await runBundle(
      'release',
      {
        ...connectionInputs(state, [host]),
        ...sampleAppInputs(APP, source),
        'release-id': 'trust-editable',
        'pip-args': '--no-index --no-build-isolation',
      },
      { idleMs: 300000 },
    );
    expect(r.code).toBe(1);
    expect(r.log).toMatch(/the requirements install a package in editable mode \(-e\)/);
  } finally {
    await writeFile(path.join(source, 'requirements.txt'), requirements);
    await rm(pkg, { recursive: true, force: true });
  }
});

test('a venv without the system site-packages has setuptools where ensurepip gave one (before Python 3.12), and no pip of its own', async () => {
  // A local package built from source without build isolation needs the venv's own setuptools.
  const app = await mkdtemp(path.join(tmpdir(), 'metalship-isolated-'));
  try {
    await mkdir(path.join(app, 'isopkg'));
    await writeFile(
      path.join(app, 'isopkg', 'setup.py'),
      "from setuptools import setup\nsetup(name='isopkg', version='1.0', py_modules=['isopkg'])\n",
    );
    await writeFile(path.join(app, 'isopkg', 'isopkg.py'), 'VALUE = 1\n');
    await writeFile(path.join(app, 'requirements.txt'), './isopkg\n');
    await writeFile(path.join(app, 'main.py'), 'app = None\n');
    const r = await runBundle(
      'release',
      {
        ...connectionInputs(state, [host]),
        app: APP,
        source: app,
        'release-id': 'trust-isolated',
        'system-site-packages': 'false',
        'pip-args': '--no-index --no-build-isolation',
        'import-check': 'false',
      },
      { idleMs: 300000 },
    );
    const before312 = (
      await onHost(state, host, 'python3 -c "import sys; print(sys.version_info < (3, 12))"')
    ).trim();
    if (before312 === 'True') {
      expectOk(r);
      const venv = `${ROOT}/releases/trust-isolated/.venv`;
      expect(
        await onHost(state, host, `${venv}/bin/python -c "import isopkg, setuptools; print(isopkg.VALUE)"`),
      ).toBe('1\n');
      expect(await onHost(state, host, `${venv}/bin/python -c "import pip" 2>&1 || true`)).toMatch(
        /No module named .?pip/,
      );
    } else {
      // ensurepip gives no setuptools from 3.12 on either: such a build needs build isolation (an index).
      expect(r.code).toBe(1);
      expect(r.log).toMatch(/setuptools/);
    }
  } finally {
    await rm(app, { recursive: true, force: true });
  }
});

test('a pip wheel updated under the same file name (as Debian ships a fix) is the pip the next venv is built with', async () => {
  const wheel = (await onHost(state, host, 'ls /usr/share/python-wheels/pip-*.whl')).trim().split('\n')[0]!;
  await onHost(
    state,
    host,
    `cp -p ${wheel} /root/pip-wheel.orig && python3 - ${wheel} <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'a') as z:
    z.writestr('pip/_metalship_update.py', 'FIXED = True\\n')
EOF`,
  );
  const requirements = await readFile(path.join(source, 'requirements.txt'), 'utf8');
  try {
    // New requirements: a new venv is built.
    await writeFile(path.join(source, 'requirements.txt'), `${requirements}# after the wheel's update\n`);
    const r = await runBundle('release', {
      ...connectionInputs(state, [host]),
      ...sampleAppInputs(APP, source),
      'release-id': 'trust-wheel-update',
    });
    expectOk(r);
    expect(r.log).toMatch(/building virtualenv/);
    expect(
      await onHost(state, host, 'ls /var/cache/metalship/.pip-runner/*/pip/_metalship_update.py | wc -l'),
    ).toBe('1\n');
  } finally {
    await writeFile(path.join(source, 'requirements.txt'), requirements);
    await onHost(state, host, `mv -f /root/pip-wheel.orig ${wheel}`);
  }
});

test("a user or unit of the app's names that is not metalship's is refused, never taken over", async () => {
  // Someone's account named like the build user of an app, and a unit of its name.
  await onHost(state, host, 'useradd --system --no-create-home someones-build 2>/dev/null || true');
  const taken = await runBundle('release', {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs('someones', source),
  });
  expect(taken.code).toBe(1);
  expect(taken.log).toMatch(/the user someones-build exists and is not metalship's build user of someones/);
  await onHost(
    state,
    host,
    "printf '[Unit]\\nDescription=not ours\\n' > /etc/systemd/system/foreign.target && systemctl daemon-reload",
  );
  const unit = await runBundle('deploy', {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs('foreign', source),
    'server-name': 'foreign.test',
  });
  expect(unit.code).toBe(1);
  expect(unit.log).toMatch(/\/etc\/systemd\/system\/foreign\.target exists and is not metalship's/);
  expect(await onHost(state, host, 'cat /etc/systemd/system/foreign.target')).toBe(
    '[Unit]\nDescription=not ours\n',
  );
});

test("the restore test runs the backup's own code (index expressions) as an unprivileged role, never as a superuser", async () => {
  // The app's database role owns its objects: an index expression calls a
  // function that, as a superuser, would run a program on the host.
  const sql = [
    `CREATE FUNCTION trust_g() RETURNS int LANGUAGE plpgsql VOLATILE AS $$ BEGIN IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN COPY (SELECT 1) TO PROGRAM 'id > /var/lib/postgresql/trust-pg-pwn'; END IF; RETURN 1; END $$;`,
    'CREATE FUNCTION trust_f(int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT $1 + public.trust_g() $$;',
    'CREATE TABLE trust_t (a int);',
    'INSERT INTO trust_t VALUES (1), (2);',
    'CREATE INDEX trust_i ON trust_t (public.trust_f(a));',
  ].join('\n');
  await onHost(
    state,
    host,
    `PGPASSWORD='${DB_PASSWORD}' psql -qX -h 127.0.0.1 -U ${APP} -d ${APP} -v ON_ERROR_STOP=1 <<'SQL'\n${sql}\nSQL`,
  );
  await takeBackup();
  const verify = await runBundle('backup-verify', backupVerifyInputs({ smoke: 'false' }));
  expectOk(verify);
  expect(verify.outputs.verified).toBe('true');
  expect(await onHost(state, host, 'cat /var/lib/postgresql/trust-pg-pwn 2>/dev/null || echo absent')).toBe(
    'absent\n',
  );
});

/** A backup of the app's database now, the way the daily timer takes one. */
async function takeBackup(): Promise<void> {
  const { script } = backupNowStep(
    { app: APP, database: APP, backupDir: defaultBackupDir(APP), retentionDays: 30 },
    'manual',
  );
  await onHost(state, host, `bash -se <<'METALSHIP_TRUST_EOF'\n${wrapScript(script)}METALSHIP_TRUST_EOF`);
}

function backupVerifyInputs(extra: Record<string, string> = {}): Record<string, string> {
  return {
    'backup-host': host.address,
    'ssh-key': state.key.privateKey,
    'known-hosts': host.knownHosts,
    app: APP,
    'max-age-hours': '1',
    ...extra,
  };
}
