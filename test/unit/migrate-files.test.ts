// Which deploys migrate (migrate: auto) and what decides that a migration has nothing to do.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { alembicDirectories, migrationFingerprint, shouldMigrate } from '../../src/stages/migrate.js';
import type { Manifest } from '../../src/stages/source.js';

const manifest = (...paths: string[]): Manifest => ({
  files: paths.map((p) => [p, `sum-${p}`, '644', 1]),
  links: [],
});

test('auto migrates with alembic.ini or a migrate-command, and says why', () => {
  expect(shouldMigrate('auto', manifest('alembic.ini', 'main.py'), [])).toMatchObject({ run: true });
  expect(shouldMigrate('auto', manifest('main.py'), ['python', 'manage.py', 'migrate'])).toMatchObject({
    run: true,
  });
  expect(shouldMigrate('auto', manifest('main.py', 'sub/alembic.ini'), [])).toEqual({
    run: false,
    why: 'migrate is auto, the release has no alembic.ini and migrate-command is not set',
  });
  expect(shouldMigrate('false', manifest('alembic.ini'), [])).toMatchObject({ run: false });
  expect(shouldMigrate('true', manifest('main.py'), [])).toMatchObject({ run: true });
});

test("alembic.ini's migration directories, as release paths; null when one is not", () => {
  expect(alembicDirectories('[alembic]\nscript_location = migrations\n')).toEqual(['migrations']);
  expect(alembicDirectories('[alembic]\nscript_location: %(here)s/db/alembic/\n')).toEqual(['db/alembic']);
  expect(alembicDirectories('[alembic]\nscript_location = myapp.db:migrations\n')).toEqual([
    'myapp/db/migrations',
  ]);
  expect(
    alembicDirectories(
      '[alembic]\nscript_location = migrations\nversion_locations = a/versions\n  b/versions\n',
    ),
  ).toEqual(['migrations', 'a/versions', 'b/versions']);
  // Another section's key is not alembic's.
  expect(alembicDirectories('[other]\nscript_location = x\n')).toBeNull();
  expect(alembicDirectories('[alembic]\nscript_location = /srv/migrations\n')).toBeNull();
  expect(alembicDirectories('[alembic]\nscript_location = ../elsewhere\n')).toBeNull();
  expect(alembicDirectories('[alembic]\nscript_location = %(base)s/m\n')).toBeNull();
  // Read otherwise by alembic: a separator setting (alembic's own template sets
  // `os`), headers configparser reads its own way, [DEFAULT], inline comments.
  expect(
    alembicDirectories(
      '[alembic]\nscript_location = migrations\nversion_path_separator = os\nversion_locations = migrations/versions:plugins/versions\n',
    ),
  ).toBeNull();
  expect(
    alembicDirectories('[alembic]\nscript_location = migrations\npath_separator = newline\n'),
  ).toBeNull();
  expect(alembicDirectories('[alembic] x\nscript_location = migrations\n')).toBeNull();
  expect(
    alembicDirectories('[ alembic ]\nscript_location = migrations\n[alembic]\nscript_location = real\n'),
  ).toBeNull();
  expect(
    alembicDirectories('[DEFAULT]\nscript_location = realmig\n[alembic]\nsqlalchemy.url = x\n'),
  ).toBeNull();
  expect(alembicDirectories('[alembic]\nscript_location = migrations # old\n')).toBeNull();
});

test('alembic.ini as a link still means migrate (auto), but never a skip', async () => {
  const linked: Manifest = {
    ...manifest('main.py', 'config/alembic.ini'),
    links: [['alembic.ini', 'config/alembic.ini']],
  };
  expect(shouldMigrate('auto', linked, [])).toMatchObject({ run: true });
  expect(await migrationFingerprint('/nonexistent', linked, [[], []])).toBeNull();
});

test('the fingerprint changes with a migration file, alembic.ini, a command or the file a command names; not with app code', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'metalship-fp-'));
  try {
    await writeFile(path.join(dir, 'alembic.ini'), '[alembic]\nscript_location = migrations\n');
    const base = manifest(
      'alembic.ini',
      'main.py',
      'dbmigrate.py',
      'migrations/env.py',
      'migrations/versions/1.py',
    );
    const fp = (m: Manifest, commands: string[][] = [[], []]) => migrationFingerprint(dir, m, commands);
    const a = await fp(base);
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    const changed = (p: string): Manifest => ({
      ...base,
      files: base.files.map((f) => (f[0] === p ? [p, 'other', '644', 1] : f)),
    });
    expect(await fp(changed('main.py'))).toBe(a);
    expect(await fp(changed('migrations/env.py'))).not.toBe(a);
    expect(await fp(changed('alembic.ini'))).not.toBe(a);
    expect(await fp(manifest(...base.files.map((f) => f[0]), 'migrations/versions/2.py'))).not.toBe(a);
    const custom = [['python', '-m', 'dbmigrate', 'upgrade', 'head'], []];
    expect(await fp(base, custom)).not.toBe(a);
    expect(await fp(changed('dbmigrate.py'), custom)).not.toBe(await fp(base, custom));
    // Without alembic.ini, or without files in its directory, nothing is ever skipped.
    expect(await fp(manifest('main.py'))).toBeNull();
    expect(await fp(manifest('alembic.ini', 'main.py'))).toBeNull();
    // Each directory it names must hold files: one that holds none is placed wrong.
    await writeFile(
      path.join(dir, 'alembic.ini'),
      '[alembic]\nscript_location = migrations\nversion_locations = migrations/versions plugins/versions\n',
    );
    expect(await fp(base)).toBeNull();
    expect(await fp(manifest(...base.files.map((f) => f[0]), 'plugins/versions/9.py'))).toMatch(
      /^[0-9a-f]{64}$/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
