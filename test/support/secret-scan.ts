// The whole-suite secret scan. Every bundle run of the e2e tests (runBundle)
// appends its log, its outputs and the secrets it was given to a record file
// of the test run; tests add the secrets they set up on hosts themselves
// (registerSecret). At the end, global teardown runs this file on the records:
// no log may contain any form of any secret of the whole run, and a run that
// recorded nothing fails (a scan of nothing proves nothing).
//
//   tsx test/support/secret-scan.ts DIR [RESULT.json]
//
// Secrets are declared here, by input name, not taken from the product's own
// list of secret inputs: a test must not trust what it is testing. A unit test
// checks that the two lists agree.

import { appendFileSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseEnvText } from '../../src/inputs/dotenv.js';

/** Inputs whose values are secrets, in any action. */
export const SECRET_INPUTS = [
  'ssh-key',
  'ssh-key-passphrase',
  'db-password',
  'redis-password',
  'redis-previous-password',
  'env',
  'github-token',
  'alert-webhook',
  'alert-heartbeat-url',
];

/** Shorter forms (a line of a secret, a .env value) are not searched for on their own: too many false hits. */
export const MIN_FORM = 8;

export interface SecretRecord {
  kind: 'secret';
  /** What the secret is: the input, or what a test set up with it. */
  input: string;
  value: string;
  where: string;
}

export interface RunRecord {
  kind: 'run';
  /** The bundle run, e.g. "deploy #12 in faults.test.ts › during verify ...". */
  where: string;
  /** What the runner shows of the step, its job summary and its outputs. */
  log: string;
}

export type ScanRecord = SecretRecord | RunRecord;

export interface Form {
  input: string;
  /** Which form of the secret: "the whole value", "line 3", "the value of DATABASE_URL", ... */
  form: string;
  text: string;
}

/** The forms a secret may leak in: the whole value, each line, and for .env text each value and line. */
export function secretForms(input: string, value: string): { forms: Form[]; tooShort: number } {
  const forms: Form[] = [];
  let tooShort = 0;
  const add = (form: string, text: string, whole = false) => {
    if (!text) return;
    if (!whole && text.length < MIN_FORM) {
      tooShort++;
      return;
    }
    if (!forms.some((f) => f.text === text)) forms.push({ input, form, text });
  };
  const normalised = value.replace(/\r\n?/g, '\n');
  add('the whole value', value, true);
  add('the whole value', normalised, true);
  const lines = normalised.split('\n');
  if (lines.length > 1) lines.forEach((l, i) => add(`line ${i + 1}`, l.trim()));
  if (input === 'env') {
    // The values as systemd reads them, which is what the actions mask.
    const parsed = parseEnvText(normalised);
    for (const [key, v] of Object.entries('values' in parsed ? parsed.values : {})) {
      add(`the value of ${key}`, v);
      const vl = v.split('\n');
      if (vl.length > 1) vl.forEach((l, i) => add(`line ${i + 1} of the value of ${key}`, l.trim()));
    }
  }
  return { forms, tooShort };
}

/** The secrets among a run's inputs. */
export function secretsOfInputs(inputs: Record<string, string>): { input: string; value: string }[] {
  return SECRET_INPUTS.filter((name) => inputs[name]).map((name) => ({ input: name, value: inputs[name]! }));
}

export interface Finding {
  input: string;
  form: string;
  /** The run whose log holds it, and the line. */
  where: string;
  line: number;
}

export interface ScanResult {
  runs: number;
  lines: number;
  secrets: number;
  forms: number;
  /** Forms too short to search for on their own. */
  tooShort: number;
  findings: Finding[];
}

/** Every run's log against every form of every secret of the whole test run. */
export function scan(records: ScanRecord[]): ScanResult {
  const secrets = new Map<string, SecretRecord>();
  for (const r of records) if (r.kind === 'secret') secrets.set(`${r.input}\0${r.value}`, r);
  // Each form with the secret it belongs to: a leak is reported once per secret and run, by its fullest form.
  const forms: (Form & { secret: number })[] = [];
  let tooShort = 0;
  [...secrets.values()].forEach((s, secret) => {
    const f = secretForms(s.input, s.value);
    tooShort += f.tooShort;
    for (const form of f.forms) if (!forms.some((x) => x.text === form.text)) forms.push({ ...form, secret });
  });
  const runs = records.filter((r): r is RunRecord => r.kind === 'run');
  const findings: Finding[] = [];
  let lines = 0;
  for (const run of runs) {
    const logLines = run.log.split('\n');
    lines += logLines.length;
    const found = new Set<number>();
    for (const form of forms) {
      if (found.has(form.secret)) continue;
      // Multi-line forms are searched in the whole log, single-line ones line by line.
      if (form.text.includes('\n')) {
        const at = run.log.indexOf(form.text);
        if (at >= 0) {
          found.add(form.secret);
          findings.push({
            input: form.input,
            form: form.form,
            where: run.where,
            line: run.log.slice(0, at).split('\n').length,
          });
        }
        continue;
      }
      const i = logLines.findIndex((l) => l.includes(form.text));
      if (i >= 0) {
        found.add(form.secret);
        findings.push({ input: form.input, form: form.form, where: run.where, line: i + 1 });
      }
    }
  }
  return { runs: runs.length, lines, secrets: secrets.size, forms: forms.length, tooShort, findings };
}

/** Never the secret itself: which input, which form of it, in which run's log, on which line. */
export function describeFinding(f: Finding): string {
  return `secret input '${f.input}' (${f.form}) found in the log of ${f.where}, line ${f.line}`;
}

export function readRecords(dir: string): ScanRecord[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .flatMap((f) =>
      readFileSync(path.join(dir, f), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as ScanRecord),
    );
}

/** Appends records to this process's file in dir (one JSON line each). */
export function appendRecords(dir: string, records: ScanRecord[]): void {
  appendFileSync(
    path.join(dir, `${process.pid}.jsonl`),
    records.map((r) => JSON.stringify(r) + '\n').join(''),
    { mode: 0o600 },
  );
}

/** Scans the records in dir; returns the exit status (0: nothing found, in a scan that saw something). */
export function scanDir(dir: string, resultFile?: string, out: (l: string) => void = console.log): number {
  // The scanner must find what it is looking for, or its "nothing found" means nothing.
  const planted = 'planted-Secret-9f3a1c';
  const probe = scan([
    { kind: 'secret', input: 'self-test', value: `x\n${planted}\n`, where: 'self-test' },
    { kind: 'run', where: 'the self-test', log: `ok\nfound ${planted} here\n` },
  ]);
  if (probe.findings.length !== 1) {
    out(`secret scan: the self-test found ${probe.findings.length} planted secrets, not 1`);
    return 1;
  }
  const records = readRecords(dir);
  const result = scan(records);
  if (resultFile)
    writeFileSync(resultFile, JSON.stringify({ ...result, at: new Date().toISOString() }) + '\n');
  out(
    `secret scan: ${result.runs} bundle runs, ${result.lines} log lines, ${result.secrets} secrets (${result.forms} forms; ${result.tooShort} lines or values under ${MIN_FORM} characters not searched alone): ${result.findings.length ? `${result.findings.length} FOUND` : 'none found'}`,
  );
  for (const finding of result.findings) out(`  ${describeFinding(finding)}`);
  if (result.runs === 0 || result.secrets === 0) {
    out('secret scan: no bundle run or no secret was recorded, so the scan proves nothing');
    return 1;
  }
  return result.findings.length ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  const [dir, resultFile] = process.argv.slice(2);
  if (!dir) {
    console.error('usage: secret-scan.ts DIR [RESULT.json]');
    process.exit(2);
  }
  process.exit(scanDir(dir, resultFile));
}
