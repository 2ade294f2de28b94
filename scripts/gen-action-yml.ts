import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ACTION_NAMES } from '../src/inputs/actions.js';
import { ACTION_FILES, renderActionYml, renderReference } from '../src/meta/action-yml.js';

for (const name of ACTION_NAMES) {
  const { path } = ACTION_FILES[name];
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, renderActionYml(name));
  console.log(`wrote ${path}`);
}
await mkdir('docs', { recursive: true });
await writeFile('docs/reference.md', renderReference());
console.log('wrote docs/reference.md');
