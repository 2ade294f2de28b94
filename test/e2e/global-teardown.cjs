const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { needsSharedHosts } = require('./own-hosts.cjs');

module.exports = async function globalTeardown(globalConfig) {
  if (!needsSharedHosts(globalConfig)) return;
  if (process.env.METALSHIP_KEEP_HOSTS) return;
  spawnSync('npx', ['tsx', path.join(__dirname, 'boot.ts'), 'down'], { stdio: 'inherit' });
};
