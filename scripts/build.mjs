// Bundles every action (and the command line) with @vercel/ncc into dist/<name>/index.js.
// Native add-ons are never bundled: ssh2 falls back to pure JS without them, and a
// bundle must not depend on the machine that built it.
import ncc from '@vercel/ncc';
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const entries = [
  'release',
  'migrate',
  'switch',
  'verify',
  'rollback',
  'deploy',
  'provision',
  'backup-verify',
  'status',
  'lock',
  'unlock',
  'cli',
];
const externals = ['cpu-features', './crypto/build/Release/sshcrypto.node'];

async function filesUnder(dir) {
  const out = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else out.push(p);
  }
  return out;
}

// Each bundle in a process of its own (ncc's memory grows with every bundle
// built in one process, past Node's default heap after a dozen), as many at
// once as there are cores.
const buildOne = (name) =>
  new Promise((resolve) =>
    spawn(process.execPath, [fileURLToPath(import.meta.url), name], { stdio: 'inherit' }).on(
      'close',
      resolve,
    ),
  );
const only = process.argv[2];
if (only === undefined) {
  await rm('dist', { recursive: true, force: true });
  const queue = [...entries];
  const failed = [];
  const worker = async () => {
    for (let name = queue.shift(); name; name = queue.shift())
      if ((await buildOne(name)) !== 0) failed.push(name);
  };
  await Promise.all(Array.from({ length: Math.min(availableParallelism(), entries.length) }, worker));
  if (failed.length) {
    console.error(`building ${failed.join(', ')} failed`);
    process.exit(1);
  }
  const native = (await filesUnder('dist')).filter((f) => f.endsWith('.node'));
  if (native.length) {
    console.error(`native add-ons ended up in dist/: ${native.join(', ')}`);
    process.exit(1);
  }
  console.log(`built ${entries.length} bundles into dist/`);
  process.exit(0);
}
if (!entries.includes(only)) {
  console.error(`unknown bundle ${only}: one of ${entries.join(', ')}`);
  process.exit(1);
}
for (const name of [only]) {
  const { code, assets } = await ncc(new URL(`../src/entry/${name}.ts`, import.meta.url).pathname, {
    minify: false,
    sourceMap: false,
    license: 'licenses.txt',
    externals,
    quiet: true,
    target: 'es2022',
  });
  const dir = join('dist', name);
  await mkdir(dir, { recursive: true });
  // Some bundled CommonJS code (ssh2's poly1305) reads __dirname, which ES modules lack.
  const banner =
    "import { fileURLToPath as __metalshipPath } from 'node:url';\n" +
    "import { dirname as __metalshipDir } from 'node:path';\n" +
    'const __filename = __metalshipPath(import.meta.url);\nconst __dirname = __metalshipDir(__filename);\n';
  const shebang = name === 'cli' ? '#!/usr/bin/env node\n' : '';
  await writeFile(join(dir, 'index.js'), shebang + banner + code.replace(/^#!.*\n/, ''));
  for (const [file, asset] of Object.entries(assets ?? {})) {
    if (file.endsWith('.exe')) continue; // ssh2's Windows pageant helper: not used here
    await mkdir(join(dir, file, '..'), { recursive: true });
    await writeFile(join(dir, file), asset.source);
  }
}
