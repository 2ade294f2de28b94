// What every action does around its stages: read and validate inputs before
// any host is contacted, mask secrets, write outputs and the job summary, and
// fail the step (exit code 1) on anything thrown.

import type { DotenvText } from '../inputs/dotenv.js';
import { actions, type ActionName } from '../inputs/actions.js';
import { InputError, parseInputs, secretValues, type RawInputs, type Settings } from '../inputs/parse.js';
import { withConfigFile } from '../inputs/config-file.js';
import { Log } from '../log.js';
import type { HostResult } from '../stages/hosts.js';
import { errorMessage } from '../errors.js';

/** Inputs the way the runner passes them: INPUT_<NAME> environment variables. */
export function envInputs(env: NodeJS.ProcessEnv = process.env): RawInputs {
  return (name) => env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`];
}

export interface ActionOutcome {
  outputs: Record<string, string>;
  results: HostResult[];
  summary: string;
  /** Set when the action failed: the reason, shown as the step's error. */
  failure?: string;
}

/** The longest run of backticks in text (a loop: a spread of many runs would overflow the stack). */
function longestBacktickRun(text: string): number {
  let longest = 0;
  for (const m of text.matchAll(/`+/g)) longest = Math.max(longest, m[0].length);
  return longest;
}

/**
 * Text that came from a host (an app's answer, its journal lines) shown in the
 * job summary as text: a code block, its fence longer than any run of backticks
 * inside, so no link, image or HTML in it renders.
 */
export function codeBlock(text: string): string {
  const fence = '`'.repeat(Math.max(3, longestBacktickRun(text) + 1));
  return `${fence}text\n${text}\n${fence}`;
}

/**
 * One line of text from a host in a table cell: an inline code span (no link,
 * autolink, image or HTML renders in one), cut at the first line ending of any
 * kind, its pipes escaped (GFM splits cells at them even in code).
 */
export function cellText(text: string): string {
  const line = text.split(/\r\n|\r|\n/)[0]!.replace(/\|/g, '\\|');
  if (!line) return '';
  const ticks = '`'.repeat(longestBacktickRun(line) + 1);
  return `${ticks} ${line} ${ticks}`;
}

export function resultsTable(results: HostResult[], columns: [string, string][]): string {
  const head = `| host | ok | ${columns.map(([, t]) => t).join(' | ')} | error |\n|---|---|${columns.map(() => '---|').join('')}---|`;
  const rows = results.map((r) => {
    const cells = columns.map(([k]) => (r[k] === undefined || r[k] === '' ? '–' : String(r[k])));
    const err = r.error ? cellText(r.error.slice(0, 300)) : '';
    return `| ${r.host} | ${r.ok ? '✅' : '❌'} | ${cells.join(' | ')} | ${err} |`;
  });
  return [head, ...rows].join('\n');
}

export async function runAction<A extends ActionName>(
  name: A,
  body: (settings: Settings<A>, log: Log) => Promise<ActionOutcome>,
  raw: RawInputs = envInputs(),
  log: Log = new Log(),
): Promise<{ ok: boolean; outputs: Record<string, string>; error?: string }> {
  const started = Date.now();
  for (const secret of secretValues(name, raw)) log.secret(secret);
  let settings: Settings<A>;
  try {
    const source = withConfigFile(name, raw);
    settings = parseInputs(name, source.raw, source);
    // An env's values are masked one by one too (the whole text and each line already are).
    const env = (settings as { env?: DotenvText }).env;
    for (const v of Object.values(env?.values ?? {})) log.secret(v);
    const file = source.file;
    if (file)
      log.info(
        `Config file ${file.name}${file.environment ? `, environment ${file.environment}` : ''}: ${file.taken.join(', ') || 'nothing'} taken from it`,
      );
  } catch (err) {
    const message = err instanceof InputError ? err.message : String(err);
    log.error(message);
    log.summary(
      `## ${actions[name].title}: invalid input\n\nNo host was contacted.\n\n${codeBlock(message)}`,
    );
    log.flushSummary(true);
    process.exitCode = 1;
    return { ok: false, outputs: {}, error: message };
  }
  try {
    const outcome = await body(settings, log);
    for (const [k, v] of Object.entries(outcome.outputs)) log.output(k, v);
    log.output('results', JSON.stringify(outcome.results));
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    const status = outcome.failure ? `❌ failed after ${seconds} s` : `✅ done in ${seconds} s`;
    log.printTimeline();
    const stages = log.stagesSummary();
    log.summary(
      `## ${actions[name].title}: ${status}\n\n${outcome.summary}${outcome.failure ? `\n\n**Why:**\n\n${codeBlock(outcome.failure)}` : ''}${stages ? `\n\n${stages}` : ''}`,
    );
    log.flushSummary(Boolean(outcome.failure));
    if (outcome.failure) {
      log.error(outcome.failure);
      process.exitCode = 1;
      return { ok: false, outputs: log.outputs, error: outcome.failure };
    }
    return { ok: true, outputs: log.outputs };
  } catch (err) {
    // Anything thrown fails the step, whatever its type.
    const message = errorMessage(err);
    log.printTimeline();
    log.error(message);
    log.summary(`## ${actions[name].title}: ❌ failed\n\n${codeBlock(message)}`);
    log.flushSummary(true);
    process.exitCode = 1;
    return { ok: false, outputs: log.outputs, error: log.redact(message) };
  }
}
