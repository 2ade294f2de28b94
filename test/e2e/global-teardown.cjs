const { spawnSync } = require('node:child_process');
const path = require('node:path');

module.exports = async function globalTeardown() {
  if (process.env.METALSHIP_KEEP_HOSTS) return;
  spawnSync('npx', ['tsx', path.join(__dirname, 'boot.ts'), 'down'], { stdio: 'inherit' });
};
