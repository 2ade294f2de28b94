// Shuts the shared e2e hosts down, and runs the whole-suite secret scan over
// every bundle log the run recorded (test/support/secret-scan.ts): a secret
// found, or nothing recorded, fails the run.
const { spawnSync } = require('node:child_process');
const { rmSync } = require('node:fs');
const path = require('node:path');
const { needsSharedHosts } = require('./own-hosts.cjs');

function secretScan() {
  const dir = process.env.METALSHIP_E2E_SCAN_DIR;
  if (!dir) throw new Error('secret scan: global setup made no scan directory');
  const prefix = process.env.METALSHIP_E2E_PREFIX || 'ms-e';
  const result = `/run/metalship-e2e/${prefix}secret-scan.json`;
  const scanner = path.join(__dirname, '..', 'support', 'secret-scan.ts');
  const r = spawnSync('npx', ['tsx', scanner, dir, result], { stdio: 'inherit' });
  if (r.status !== 0)
    throw new Error(`secret scan failed (exit ${r.status}); the records are kept in ${dir}`);
  rmSync(dir, { recursive: true, force: true });
}

module.exports = async function globalTeardown(globalConfig) {
  try {
    secretScan();
  } finally {
    if (needsSharedHosts(globalConfig) && !process.env.METALSHIP_KEEP_HOSTS)
      spawnSync('npx', ['tsx', path.join(__dirname, 'boot.ts'), 'down'], { stdio: 'inherit' });
  }
};
