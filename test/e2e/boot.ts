// Boots (or shuts down) the e2e suite's test hosts; run by global-setup through
// tsx, since jest's global setup cannot import TypeScript modules.
import { mkdir, writeFile } from 'node:fs/promises';
import { bootHosts, buildImage, debianRelease, ensureKey, shutdownHosts } from '../support/hosts.js';
import { E2E_INDEX, E2E_LAN, E2E_PREFIX, STATE_FILE } from '../support/e2e.js';

// Several checkouts on one machine can run the suite at once with their own
// METALSHIP_E2E_PREFIX and METALSHIP_E2E_INDEX (see test/support/e2e.ts).
// They share a private LAN (a bridge of their own; see E2E_LAN) for the fleet tests.
export const E2E_HOSTS = [1, 2, 3].map((n) => ({
  name: `${E2E_PREFIX}${n}`,
  index: E2E_INDEX + n - 1,
  lan: `${E2E_LAN.tag}:${E2E_LAN.address(n)}`,
}));

async function up(): Promise<void> {
  const started = Date.now();
  // Whatever an earlier, killed run left of these hosts goes first.
  await shutdownHosts(E2E_HOSTS.map((h) => h.name));
  await buildImage('full');
  const imageSeconds = (Date.now() - started) / 1000;
  await mkdir('/run/metalship-e2e', { recursive: true });
  const key = await ensureKey(`/run/metalship-e2e/${E2E_PREFIX}key`);
  const bootStarted = Date.now();
  const hosts = await bootHosts(E2E_HOSTS, key);
  await writeFile(STATE_FILE, JSON.stringify({ key, hosts }));
  process.stdout.write(
    `test hosts (${debianRelease()}): image ready in ${imageSeconds.toFixed(1)} s, ${hosts.length} hosts booted in ${((Date.now() - bootStarted) / 1000).toFixed(1)} s\n`,
  );
}

if (process.argv[2] === 'down') await shutdownHosts(E2E_HOSTS.map((h) => h.name));
else await up();
