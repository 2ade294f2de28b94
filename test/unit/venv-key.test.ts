// A virtualenv is reused only while everything its requirements bring in from
// the source is unchanged: nested -r/-c files and local packages included.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildManifest, venvKey } from '../../src/stages/source.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'metalship-venvkey-'));
  await mkdir(path.join(dir, 'reqs'));
  await mkdir(path.join(dir, 'libs/pkg'), { recursive: true });
  await writeFile(path.join(dir, 'requirements.txt'), 'uvicorn\n-r reqs/base.txt\n./libs/pkg  # ours\n');
  await writeFile(path.join(dir, 'reqs/base.txt'), 'redis\n-c constraints.txt\n');
  await writeFile(path.join(dir, 'reqs/constraints.txt'), 'redis<5\n');
  await writeFile(path.join(dir, 'libs/pkg/setup.py'), 'from setuptools import setup\nsetup(name="pkg")\n');
  await writeFile(path.join(dir, 'main.py'), 'app = None\n');
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const key = async () => venvKey(dir, 'requirements.txt', ['python3'], await buildManifest(dir, [], []));

test.each([
  ['a nested requirements file', 'reqs/base.txt', 'redis\nalembic\n-c constraints.txt\n'],
  ['a constraints file it names', 'reqs/constraints.txt', 'redis<4\n'],
  ['a local package', 'libs/pkg/setup.py', 'from setuptools import setup\nsetup(name="pkg", version="2")\n'],
])('a change to %s gives a new venv', async (_what, file, text) => {
  const before = await key();
  await writeFile(path.join(dir, file), text);
  expect(await key()).not.toBe(before);
});

test('a change to the app code alone keeps the venv', async () => {
  const before = await key();
  await writeFile(path.join(dir, 'main.py'), 'app = 1\n');
  expect(await key()).toBe(before);
});
