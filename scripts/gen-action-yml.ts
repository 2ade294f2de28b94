import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ACTION_NAMES } from '../src/inputs/actions.js';
import { ACTION_FILES, renderActionYml } from '../src/meta/action-yml.js';

for (const name of ACTION_NAMES) {
  const { path } = ACTION_FILES[name];
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, renderActionYml(name));
  console.log(`wrote ${path}`);
}
