// The whole-suite secret scan (test/support/secret-scan.ts) itself: it finds
// what is planted, says where without repeating it, and fails a scan of nothing.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { actions, ACTION_NAMES } from '../../src/inputs/actions.js';
import type { Field } from '../../src/inputs/fields.js';
import {
  appendRecords,
  describeFinding,
  scan,
  scanDir,
  SECRET_INPUTS,
  secretForms,
  secretsOfInputs,
  type ScanRecord,
} from '../support/secret-scan.js';

const KEY = [
  '-----BEGIN OPENSSH PRIVATE KEY-----',
  'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW',
  'QyNTUxOQAAACCx4mFQ3m5mJ0Yb0FKqPp7n2m8u8eF3a2wT6x2Ff0cYhQAAAJgC3u8dAt7v',
  'HQAAAAtzc2gtZWQyNTUxOQAAACCx4mFQ3m5mJ0Yb0FKqPp7n2m8u8eF3a2wT6x2Ff0cYhQ',
  '-----END OPENSSH PRIVATE KEY-----',
  '',
].join('\n');

const ENV =
  'REDIS_URL=redis://app:Redis-Pw-771@127.0.0.1/0\nDEBUG=1\nNOTE="first line of a note\nsecond line of a note"\n';

function run(where: string, log: string): ScanRecord {
  return { kind: 'run', where, log };
}
function secret(input: string, value: string): ScanRecord {
  return { kind: 'secret', input, value, where: 'a test' };
}

test('every input the product treats as secret is scanned, and only those', () => {
  const product = new Set<string>();
  for (const name of ACTION_NAMES)
    for (const [input, f] of Object.entries(actions[name].inputs as Record<string, Field>))
      if (f.secret) product.add(input);
  expect([...product].sort()).toEqual([...SECRET_INPUTS].sort());
  expect(secretsOfInputs({ app: 'shop', 'ssh-key': KEY, 'db-password': '' })).toEqual([
    { input: 'ssh-key', value: KEY },
  ]);
});

test('a line of the private key planted in one run is found, named by input, form, run and line', () => {
  const records = [
    secret('ssh-key', KEY),
    run('deploy run #1', 'connecting\nall good\n'),
    run('deploy run #2', `connecting\nerror: bad key ${KEY.split('\n')[2]} here\n`),
  ];
  const r = scan(records);
  expect(r.findings).toEqual([{ input: 'ssh-key', form: 'line 3', where: 'deploy run #2', line: 2 }]);
  expect(r.runs).toBe(2);
  expect(r.lines).toBe(6);
  const message = describeFinding(r.findings[0]!);
  expect(message).toBe("secret input 'ssh-key' (line 3) found in the log of deploy run #2, line 2");
  expect(message).not.toContain(KEY.split('\n')[2]!);
});

test('the whole key, the armor lines, .env values and lines of multi-line values are all searched', () => {
  const cases: [string, string, string][] = [
    ['ssh-key', KEY, KEY],
    ['ssh-key', KEY, 'x -----END OPENSSH PRIVATE KEY----- y'],
    ['env', ENV, 'url is redis://app:Redis-Pw-771@127.0.0.1/0'],
    ['env', ENV, 'note: second line of a note'],
    ['ssh-key-passphrase', 'hunter2-pass', 'pip: no hunter2-pass'],
  ];
  for (const [input, value, log] of cases) {
    const r = scan([secret(input, value), run('r', `a\n${log}\nb`)]);
    expect({ input, log, found: r.findings.length }).toEqual({ input, log, found: 1 });
  }
});

test('masked logs pass; short values are not searched alone, but the whole secret still is', () => {
  const masked = scan([secret('env', ENV), secret('ssh-key', KEY), run('r', 'REDIS_URL=***\n***\n')]);
  expect(masked.findings).toEqual([]);
  // DEBUG=1: "1" and "DEBUG=1" are too short to search alone.
  expect(secretForms('env', ENV).tooShort).toBe(2);
  expect(scan([secret('env', ENV), run('r', 'DEBUG=1 and 1')]).findings).toEqual([]);
  expect(scan([secret('db-password', 'pw1'), run('r', 'the pw1 leaked')]).findings).toHaveLength(1);
});

test('scanDir: a planted secret fails the scan, a clean run passes, a run that recorded nothing fails', () => {
  const out: string[] = [];
  const dir = mkdtempSync(path.join(tmpdir(), 'scan-'));
  try {
    expect(scanDir(dir, undefined, (l) => out.push(l))).toBe(1);
    expect(out.pop()).toMatch(/proves nothing/);
    appendRecords(dir, [secret('db-password', 'Db-Secret-Planted'), run('deploy run #1', 'clean\nlog')]);
    const result = path.join(dir, 'result.json');
    expect(scanDir(dir, result, (l) => out.push(l))).toBe(0);
    expect(out.pop()).toMatch(/^secret scan: 1 bundle runs, 2 log lines, 1 secrets .*none found$/);
    expect(JSON.parse(readFileSync(result, 'utf8'))).toMatchObject({ runs: 1, lines: 2, findings: [] });
    appendRecords(dir, [run('release run #2', 'oops Db-Secret-Planted')]);
    expect(scanDir(dir, undefined, (l) => out.push(l))).toBe(1);
    expect(out.slice(-2)).toEqual([
      expect.stringMatching(/2 bundle runs, 3 log lines, .*: 1 FOUND$/),
      "  secret input 'db-password' (the whole value) found in the log of release run #2, line 1",
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
