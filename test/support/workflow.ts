// Runs the steps of an example workflow's job as the runner would, for the e2e
// tests of examples/workflows: each metalship step's `with:` values (their
// ${{ }} expressions filled from the test's secrets, variables, dispatch
// inputs' defaults and earlier steps' outputs) go to the real bundle; `if:`
// conditions are evaluated; `run:` steps with an id (those whose outputs later
// steps read) run under bash. Other steps (checkout, reports) are skipped.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { REPO, runBundle, type BundleRun } from './e2e.js';

interface Step {
  id?: string;
  name?: string;
  if?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
}
interface Workflow {
  on?: { workflow_dispatch?: { inputs?: Record<string, { default?: unknown }> } | null };
  env?: Record<string, string>;
  jobs: Record<string, { steps: Step[] }>;
}

export interface WorkflowContext {
  secrets: Record<string, string>;
  vars: Record<string, string>;
  /** The checkout: hashFiles() looks here, and the steps run in it (its .metalship.yml). */
  source: string;
  /** Inputs every metalship step gets on top of its `with:` (the test hosts' differences), by bundle. */
  adapt: (bundle: string, inputs: Record<string, string>) => Record<string, string>;
  runId?: string;
  runAttempt?: number;
}

export interface StepRun {
  name: string;
  bundle?: string;
  outcome: 'success' | 'failure' | 'skipped';
  run?: BundleRun;
  outputs: Record<string, string>;
}

export function readWorkflow(file: string): Workflow {
  return parse(readFileSync(path.join(REPO, 'examples/workflows', file), 'utf8')) as Workflow;
}

const CONTEXTS = /\b(steps|inputs|secrets|vars|github|env)((?:\.[A-Za-z_][A-Za-z0-9_-]*)+)/g;

/** An expression of GitHub's language, as far as the examples use it, in JavaScript. */
function evaluate(expr: string, ctx: Record<string, unknown>, fns: Record<string, unknown>): unknown {
  const js = expr
    .replace(CONTEXTS, (_, root: string, rest: string) =>
      [
        `ctx.${root}`,
        ...rest
          .slice(1)
          .split('.')
          .map((p) => `[${JSON.stringify(p)}]`),
      ].join(''),
    )
    .replace(/([!=])=/g, '$1==');
  const names = Object.keys(fns);
  return new Function('ctx', ...names, `return (${js});`)(ctx, ...names.map((n) => fns[n])) as unknown;
}

/** A context object whose missing keys fail the test (a secret or variable the test forgot). */
function strict(what: string, values: Record<string, unknown>): Record<string, unknown> {
  return new Proxy(values, {
    get(target, key) {
      if (typeof key === 'string' && !(key in target)) throw new Error(`the workflow reads ${what}.${key}`);
      return target[key as string];
    },
  });
}

/** Runs one job of an example workflow, step by step; returns every step's outcome. */
export async function runJob(file: string, job: string, c: WorkflowContext): Promise<StepRun[]> {
  const wf = readWorkflow(file);
  const inputs = Object.fromEntries(
    Object.entries(wf.on?.workflow_dispatch?.inputs ?? {}).map(([k, v]) => [k, v.default ?? '']),
  );
  const steps: Record<string, { outputs: Record<string, string>; outcome: string }> = {};
  const runId = c.runId ?? String(process.pid);
  const runAttempt = c.runAttempt ?? 1;
  const ctx = {
    secrets: strict('secrets', c.secrets),
    vars: strict('vars', c.vars),
    inputs: strict('inputs', inputs),
    env: strict('env', wf.env ?? {}),
    steps: new Proxy(steps, { get: (t, k) => t[k as string] ?? { outputs: {}, outcome: '' } }),
    github: {
      run_id: runId,
      run_attempt: String(runAttempt),
      actor: 'e2e-tester',
      server_url: 'https://github.example',
      repository: 'metalship/e2e',
    },
  };
  let failed = false;
  const fns = {
    failure: () => failed,
    success: () => !failed,
    always: () => true,
    hashFiles: (p: string) => (existsSync(path.join(c.source, p)) ? 'hash' : ''),
  };
  const fill = (v: unknown): string =>
    String(v).replace(/\$\{\{(.*?)\}\}/g, (_, e: string) => String(evaluate(e, ctx, fns)));
  const done: StepRun[] = [];
  for (const step of wf.jobs[job]!.steps) {
    const name = step.name ?? step.id ?? step.uses ?? 'run';
    const cond =
      step.if === undefined ? !failed : Boolean(evaluate(step.if.replace(/^\$\{\{|\}\}$/g, ''), ctx, fns));
    const match = /^metalship\/metalship(?:\/actions\/([a-z-]+))?@/.exec(step.uses ?? '');
    let result: StepRun = { name, outcome: 'skipped', outputs: {} };
    if (cond && match) {
      const bundle = match[1] ?? 'deploy';
      const given = Object.fromEntries(Object.entries(step.with ?? {}).map(([k, v]) => [k, fill(v)]));
      const stepInputs = c.adapt(bundle, given);
      // In the checkout, as on a runner: the actions read its .metalship.yml.
      const run = await runBundle(bundle, stepInputs, {
        cwd: c.source,
        env: { GITHUB_WORKSPACE: c.source, GITHUB_RUN_ID: runId, GITHUB_RUN_ATTEMPT: String(runAttempt) },
      });
      result = { name, bundle, run, outputs: run.outputs, outcome: run.code === 0 ? 'success' : 'failure' };
    } else if (cond && step.run && step.id) {
      const dir = mkdtempSync(path.join(tmpdir(), 'metalship-run-'));
      const out = path.join(dir, 'output');
      const r = spawnSync('bash', ['-e', '-c', fill(step.run)], {
        env: {
          PATH: process.env.PATH,
          GITHUB_OUTPUT: out,
          GITHUB_RUN_ID: runId,
          GITHUB_RUN_ATTEMPT: String(runAttempt),
        },
        encoding: 'utf8',
      });
      const outputs = Object.fromEntries(
        (existsSync(out) ? readFileSync(out, 'utf8') : '')
          .split('\n')
          .filter((l) => l.includes('='))
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
      rmSync(dir, { recursive: true, force: true });
      result = { name, outputs, outcome: r.status === 0 ? 'success' : 'failure' };
    } else if (cond) {
      result = { name, outcome: 'success', outputs: {} };
    }
    if (result.outcome === 'failure') failed = true;
    if (step.id) steps[step.id] = { outputs: result.outputs, outcome: result.outcome };
    done.push(result);
  }
  return done;
}

/** A job's steps by name, for assertions. */
export function ran(steps: StepRun[]): Record<string, StepRun> {
  return Object.fromEntries(steps.map((s) => [s.name, s]));
}
