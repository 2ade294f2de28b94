// npm run demo: boots a local test host (Debian 12 in systemd-nspawn), then runs
// the actions' bundles against it exactly as GitHub would: deploy the sample app
// v1, deploy v2 (one file changed), roll back to v1. Needs root.
// METALSHIP_DEMO_KEEP=1 leaves the host running afterwards.

import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bootHosts, buildImage, ensureKey, shutdownHosts, sshRun } from '../test/support/hosts.js';
import { runBundle, SAMPLE_APP, sampleAppInputs } from '../test/support/e2e.js';
import { errorMessage } from '../src/errors.js';

const NAME = 'ms-demo';
const say = (text: string) => process.stdout.write(`\n\x1b[1m${text}\x1b[0m\n`);

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('npm run demo boots a test host with systemd-nspawn and needs root.\n');
    return 1;
  }
  say('1/5 building (or reusing) the Debian 12 test image');
  await buildImage('full');
  const key = await ensureKey('/var/lib/metalship/demo-key');
  say('2/5 booting a test host');
  await shutdownHosts([NAME]);
  const [host] = await bootHosts([{ name: NAME, index: 90 }], key);
  if (!host) throw new Error('no host booted');
  process.stdout.write(`host ${host.name} at ${host.address}\n`);
  const source = await mkdtemp(path.join(tmpdir(), 'metalship-demo-'));
  try {
    await cp(SAMPLE_APP, source, { recursive: true });
    await sshRun(
      host,
      key,
      "mkdir -p /opt/demo && echo 'REDIS_URL=redis://127.0.0.1:6379/0' > /opt/demo/.env",
    );
    const inputs = {
      hosts: host.address,
      'ssh-key': key.privateKey,
      'known-hosts': host.knownHosts,
      ...sampleAppInputs('demo', source),
      'expect-body': '{release}',
    };
    const step = async (title: string, bundle: string, extra: Record<string, string> = {}) => {
      say(title);
      const started = Date.now();
      const r = await runBundle(bundle, { ...inputs, ...extra }, { env: { GITHUB_ACTIONS: '' } });
      process.stdout.write(
        r.stdout
          .split('\n')
          .filter((l) => !l.startsWith('::'))
          .join('\n'),
      );
      const version = await fetch(`http://${host.address}/version`).then(
        (res) => res.text(),
        (e: Error) => e.message,
      );
      process.stdout.write(
        `\n→ ${bundle} exited ${r.code} after ${((Date.now() - started) / 1000).toFixed(1)} s; http://${host.address}/version says ${version}\n`,
      );
      if (r.code !== 0) throw new Error(`${bundle} failed`);
      return r;
    };
    await step('3/5 deploy v1 (first deploy: builds the virtualenv)', 'deploy');
    await writeFile(path.join(source, 'version.py'), 'VERSION = "v2"\n');
    await step('4/5 deploy v2 (one file changed)', 'deploy');
    await step('5/5 roll back to v1', 'rollback');
    say('Done.');
    if (process.env.METALSHIP_DEMO_KEEP) {
      process.stdout.write(
        `The host keeps running: curl http://${host.address}/ ; stop it with: bash test/hosts/testhosts.sh down ${NAME}\n`,
      );
    }
    return 0;
  } finally {
    await rm(source, { recursive: true, force: true });
    if (!process.env.METALSHIP_DEMO_KEEP) await shutdownHosts([NAME]);
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${errorMessage(err)}\n`);
    process.exit(1);
  },
);
