// Two projects: fast unit tests of pure code, and e2e tests against real
// systemd-nspawn test hosts (booted once in globalSetup).
import { createRequire } from 'node:module';

// Test files named on the command line, even where --selectProjects swallowed them (see own-hosts.cjs).
const { namedTestFiles } = createRequire(import.meta.url)('./test/e2e/own-hosts.cjs');
const named = namedTestFiles();
const only = (dir) => {
  const files = named.filter((f) => f.includes(`/test/${dir}/`));
  return files.length ? { testMatch: files } : {};
};

const common = {
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: { '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json' }] },
  testEnvironment: 'node',
};

export default {
  // e2e files share the test hosts: one at a time.
  maxWorkers: 1,
  // A generous outer bound only: e2e tests deploy to real hosts, and what they
  // run on a host has idle limits (killed when silent), never tight wall-clock ones.
  testTimeout: 1800000,
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'], ...only('unit') },
    {
      ...common,
      displayName: 'e2e',
      testMatch: ['<rootDir>/test/e2e/**/*.test.ts'],
      ...only('e2e'),
      globalSetup: '<rootDir>/test/e2e/global-setup.cjs',
      globalTeardown: '<rootDir>/test/e2e/global-teardown.cjs',
    },
  ],
};
