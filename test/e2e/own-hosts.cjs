// Which test files a run names, and whether it needs the shared e2e hosts.
//
// `jest --selectProjects e2e test/e2e/x.test.ts` hands the path to
// --selectProjects (an array option), so jest would run every e2e file:
// jest.config.js reads the test files named on the command line itself.
//
// E2E files that boot their own test hosts (under their own names and indexes)
// need none of the shared ones: when a run selects only such files, global
// setup and teardown leave the shared hosts (ms-e1..3) alone, so they never
// disturb another run that is using them.
const { existsSync } = require('node:fs');
const path = require('node:path');

const OWN_HOSTS = [/backup-verify(\.test\.ts)?$/, /provision(\.test\.ts)?$/, /offsite(\.test\.ts)?$/];

/** Test files named on the command line (wherever jest's option parsing put them), absolute. */
function namedTestFiles(argv = process.argv) {
  return argv
    .slice(2)
    .filter((a) => /\.test\.ts$/.test(a) && existsSync(a))
    .map((a) => path.resolve(a));
}

function needsSharedHosts(globalConfig) {
  const p = globalConfig && globalConfig.testPathPatterns;
  const patterns = [...(Array.isArray(p) ? p : (p && p.patterns) || []), ...namedTestFiles()];
  return patterns.length === 0 || !patterns.every((x) => OWN_HOSTS.some((re) => re.test(String(x))));
}

module.exports = { namedTestFiles, needsSharedHosts };
