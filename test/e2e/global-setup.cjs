// Boots the e2e test hosts once for the whole run (see boot.ts), and makes the
// directory the whole-suite secret scan collects the run's bundle logs in.
const { spawnSync } = require('node:child_process');
const { mkdirSync } = require('node:fs');
const path = require('node:path');
const { needsSharedHosts } = require('./own-hosts.cjs');

module.exports = async function globalSetup(globalConfig) {
  // Test workers inherit this environment: runBundle records into the directory.
  const prefix = process.env.METALSHIP_E2E_PREFIX || 'ms-e';
  const dir = `/run/metalship-e2e/${prefix}scan-${Date.now()}-${process.pid}`;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  process.env.METALSHIP_E2E_SCAN_DIR = dir;
  if (!needsSharedHosts(globalConfig)) return;
  const r = spawnSync('npx', ['tsx', path.join(__dirname, 'boot.ts'), 'up'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`booting the e2e test hosts failed (exit ${r.status})`);
};
