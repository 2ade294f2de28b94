// Trust boundaries on a real host, each tried as an attacker would (see
// docs/threat-model.md): the app user plants links where root acts, the app's
// own code turns on the restore test, package build code wants root, and any
// local user reads command lines. Each of these failed on the code before the fix.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { backupNowScript, defaultBackupDir } from '../../src/remote/backup.js';
import { wrapScript } from '../../src/transport/ssh.js';
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
const DB_PASSWORD = 'Trusty-db-Pw-7731';
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

test('package build code (setup.py) never runs as root, nor as the app user', async () => {
  // A requirement built from source: its setup.py runs while pip installs it.
  const pkg = await mkdtemp(path.join(tmpdir(), 'metalship-evilpkg-'));
  await mkdir(path.join(pkg, 'evilpkg-1.0'));
  await writeFile(
    path.join(pkg, 'evilpkg-1.0', 'setup.py'),
    `import os
from setuptools import setup
with open('/tmp/trust-setup-uid', 'w') as f:
    f.write('%d %d' % (os.getuid(), os.geteuid()))
try:
    open('/root/trust-setup-pwned', 'w').write('pwned')
except OSError:
    pass
setup(name='evilpkg', version='1.0', py_modules=[])
`,
  );
  await writeFile(
    path.join(pkg, 'evilpkg-1.0', 'PKG-INFO'),
    'Metadata-Version: 1.0\nName: evilpkg\nVersion: 1.0\n',
  );
  execFileSync('tar', ['-C', pkg, '-czf', path.join(source, 'evilpkg-1.0.tar.gz'), 'evilpkg-1.0']);
  await rm(pkg, { recursive: true, force: true });
  const id = 'trust-build-1';
  const requirements = await readFile(path.join(source, 'requirements.txt'), 'utf8');
  await writeFile(
    path.join(source, 'requirements.txt'),
    `${requirements}${ROOT}/releases/${id}/evilpkg-1.0.tar.gz\n`,
  );
  await onHost(state, host, 'rm -f /tmp/trust-setup-uid /root/trust-setup-pwned');
  const r = await runBundle(
    'release',
    {
      ...connectionInputs(state, [host]),
      ...sampleAppInputs(APP, source),
      'release-id': id,
      'pip-args': '--no-index --no-build-isolation',
    },
    { idleMs: 300000 },
  );
  expectOk(r);
  const [uid, euid] = (await onHost(state, host, 'cat /tmp/trust-setup-uid')).trim().split(' ');
  expect(await onHost(state, host, 'test -e /root/trust-setup-pwned && echo pwned || echo absent')).toBe(
    'absent\n',
  );
  expect(uid).not.toBe('0');
  const buildUid = (await onHost(state, host, `id -u ${APP}-build`)).trim();
  expect({ uid, euid }).toEqual({ uid: buildUid, euid: buildUid });
  // The venv it built is sealed: root's, and nothing in it writable by others or set-id.
  const venv = (await onHost(state, host, `readlink ${ROOT}/releases/${id}/.venv`)).trim();
  expect(await stat(venv)).toBe('root 755');
  expect(
    await onHost(state, host, `find ${venv} \\( ! -user root -o -perm /6022 \\) ! -type l -print | head -5`),
  ).toBe('');
});

/** A backup of the app's database now, the way the daily timer takes one. */
async function takeBackup(): Promise<void> {
  const script = backupNowScript(
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
