// The few workflow commands the actions give the runner, in GitHub's documented
// formats and written as @actions/core writes them. Not @actions/core itself:
// it brings an HTTP client (undici, for its OIDC tokens) that every action
// would compile at its start, about a megabyte and 50 ms of each deploy and
// rollback. Its output is the reference these are tested against
// (test/unit/workflow-commands.test.ts).

import { randomUUID } from 'node:crypto';
import { appendFileSync, existsSync } from 'node:fs';
import { EOL } from 'node:os';

/** A command's message: what would end it or start another line, escaped. */
function escapeData(s: string): string {
  return s.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

/** A command without properties, as a line of stdout (`::warning::message`). */
export function commandLine(name: 'warning' | 'notice' | 'error' | 'add-mask', message: string): string {
  return `::${name}::${escapeData(message)}`;
}

/** Writes a command to stdout, where the runner reads them (as @actions/core does, whatever the log's own writer). */
export function issue(name: Parameters<typeof commandLine>[0], message: string): void {
  process.stdout.write(commandLine(name, message) + EOL);
}

/**
 * Sets a step output through the GITHUB_OUTPUT file, between delimiters no
 * value can contain (a value that did could set other outputs).
 */
export function setOutput(name: string, value: string): void {
  const file = process.env.GITHUB_OUTPUT;
  if (!file) throw new Error('GITHUB_OUTPUT is not set: the step outputs have nowhere to go');
  if (!existsSync(file)) throw new Error(`the step output file ${file} (GITHUB_OUTPUT) is missing`);
  const delimiter = `ghadelimiter_${randomUUID()}`;
  if (name.includes(delimiter) || value.includes(delimiter))
    throw new Error(`the output ${name} contains its own delimiter: not written`);
  appendFileSync(file, `${name}<<${delimiter}${EOL}${value}${EOL}${delimiter}${EOL}`, { encoding: 'utf8' });
}
