// Two projects: fast unit tests of pure code, and e2e tests against real
// systemd-nspawn test hosts (booted once in globalSetup).
const common = {
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: { '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json' }] },
  testEnvironment: 'node',
};

export default {
  // e2e files share the test hosts: one at a time.
  maxWorkers: 1,
  // e2e tests deploy to real hosts; unit tests finish in milliseconds anyway.
  testTimeout: 300000,
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    {
      ...common,
      displayName: 'e2e',
      testMatch: ['<rootDir>/test/e2e/**/*.test.ts'],
      globalSetup: '<rootDir>/test/e2e/global-setup.cjs',
      globalTeardown: '<rootDir>/test/e2e/global-teardown.cjs',
    },
  ],
};
