// Boots the e2e test hosts once for the whole run (see boot.ts).
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { needsSharedHosts } = require('./own-hosts.cjs');

module.exports = async function globalSetup(globalConfig) {
  if (!needsSharedHosts(globalConfig)) return;
  const r = spawnSync('npx', ['tsx', path.join(__dirname, 'boot.ts'), 'up'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`booting the e2e test hosts failed (exit ${r.status})`);
};
