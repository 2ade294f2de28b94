// A local apt repository for bare test hosts (see test/hosts/aptrepo.sh).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { buildImage, debianRelease, type DebianRelease } from './hosts.js';

/** Packages provision installs on a bare host, plus what the sample app imports (no PyPI here). */
export const PROVISION_REPO_PACKAGES = [
  'nginx',
  'postgresql',
  'redis-server',
  'ufw',
  'certbot',
  'python3-venv',
  'python3-pip',
  'logrotate',
  'unattended-upgrades',
  'curl',
  'ca-certificates',
  'openssl',
  'prometheus-node-exporter',
  'iptables',
  'lynis',
  'python3-uvicorn',
  'python3-fastapi',
  'python3-sqlalchemy',
  'python3-psycopg2',
  'python3-redis',
  'python3-httpx',
  'python3-alembic',
];

/**
 * Builds (or reuses from /var/cache/metalship) the release's repository (made
 * from, and cached per, the release's bare image); returns its directory.
 */
export async function provisionRepo(release: DebianRelease = debianRelease()): Promise<string> {
  const rootfs = await buildImage('bare', release);
  const script = fileURLToPath(new URL('../hosts/aptrepo.sh', import.meta.url));
  const r = spawnSync('bash', [script, rootfs, ...PROVISION_REPO_PACKAGES], {
    encoding: 'utf8',
    timeout: 900000,
  });
  if (r.status !== 0) throw new Error(`aptrepo.sh failed (${r.status}): ${r.stderr.slice(-4000)}`);
  return r.stdout.trim().split('\n').pop()!;
}
