// Logging, outputs and the job summary. Every line goes through redact(), so a
// secret never reaches the log even outside GitHub (where ::add-mask:: does nothing).

import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { issue, setOutput } from './workflow-commands.js';

/** One entry of the run's timeline: a stage (a log group) or a remote command, in seconds since the run began. */
export interface TimelineEntry {
  /** mark: an instant a remote script announced (`MARK <what>` on its own line), such as traffic moving. */
  kind: 'stage' | 'remote' | 'mark';
  what: string;
  /** The host a remote command ran on. */
  host?: string;
  start: number;
  end: number;
  ok: boolean;
}

export class Log {
  private readonly secrets = new Set<string>();
  /** When the run began: the timeline counts from here. */
  readonly began = Date.now();
  /** Seconds from the process's start to the run's (loading the bundle). */
  private readonly loaded = process.uptime();
  readonly timeline: TimelineEntry[] = [];
  private readonly onGitHub: boolean;
  readonly outputs: Record<string, string> = {};
  private summaryParts: string[] = [];

  constructor(private readonly write: (line: string) => void = (l) => process.stdout.write(l + '\n')) {
    this.onGitHub = process.env.GITHUB_ACTIONS === 'true';
  }

  /** Registers a secret: the whole value and each of its lines are masked from now on. */
  secret(value: string): void {
    const normalised = value.replace(/\r\n?/g, '\n');
    // As given, as used (inputs are trimmed at their ends), and line by line.
    const forms = [value, normalised, normalised.trim(), ...normalised.split('\n').map((l) => l.trim())];
    for (const form of forms) {
      if (form.length < 3 || this.secrets.has(form)) continue;
      this.secrets.add(form);
      if (this.onGitHub) issue('add-mask', form);
    }
  }

  redact(text: string): string {
    let out = text;
    // Longest first, so a whole multi-line secret is masked before its lines.
    for (const settings of [...this.secrets].sort((a, b) => b.length - a.length)) {
      if (out.includes(settings)) out = out.split(settings).join('***');
    }
    return out;
  }

  /**
   * Plain text, never a workflow command: lines carry what hosts print, and the
   * runner reads `##[...]` anywhere in a line (and `::...::` after any leading
   * white space) as a command, such as one that sets a step output; it splits
   * lines at \r as well as \n. Lines that could be read so are written with
   * command processing stopped, under a token nobody can guess.
   */
  info(message: string): void {
    const lines = this.redact(message).split(/\r\n|\r|\n/);
    if (this.onGitHub && lines.some((l) => l.includes('##[') || l.includes('::'))) {
      const token = randomBytes(16).toString('hex');
      this.write(`::stop-commands::${token}`);
      for (const line of lines) this.write(line);
      this.write(`::${token}::`);
      return;
    }
    for (const line of lines) this.write(line);
  }

  warn(message: string): void {
    const m = this.redact(message);
    if (this.onGitHub) issue('warning', m);
    else this.write(`warning: ${m}`);
  }

  /** Something skipped that the user may want to know about, but no problem: an annotation on GitHub. */
  notice(message: string): void {
    const m = this.redact(message);
    if (this.onGitHub) issue('notice', m);
    else this.write(`notice: ${m}`);
  }

  error(message: string): void {
    const m = this.redact(message);
    if (this.onGitHub) issue('error', m);
    else this.write(`error: ${m}`);
  }

  /** A collapsible log group; closed even when fn throws. */
  async group<T>(name: string, fn: () => Promise<T>): Promise<T> {
    // Names can carry what a host said (a dump's name, a schema revision): one
    // line, and no `##[` the runner would read as a command.
    const title = this.redact(name)
      // eslint-disable-next-line no-control-regex
      .replace(/[\x00-\x1f\x7f\u0085\u2028\u2029]+/g, ' ')
      .replace(/##\[/g, '# #[');
    this.write(this.onGitHub ? `::group::${title}` : `▶ ${title}`);
    return this.timed({ kind: 'stage', what: title }, fn).finally(() => {
      if (this.onGitHub) this.write('::endgroup::');
    });
  }

  /** Runs fn and records how long it took in the timeline (whether it succeeded or threw). */
  async timed<T>(
    entry: { kind: TimelineEntry['kind']; what: string; host?: string },
    fn: () => Promise<T>,
  ): Promise<T> {
    // Entered at its start, so the timeline stays in order of start (ties included).
    const recorded: TimelineEntry = {
      ...entry,
      what: this.redact(entry.what),
      start: (Date.now() - this.began) / 1000,
      end: NaN,
      ok: false,
    };
    this.timeline.push(recorded);
    try {
      const result = await fn();
      recorded.ok = true;
      return result;
    } finally {
      recorded.end = (Date.now() - this.began) / 1000;
    }
  }

  /** An instant in the timeline: when a streamed script said it reached a point. */
  mark(what: string, host?: string): void {
    const at = (Date.now() - this.began) / 1000;
    this.timeline.push({ kind: 'mark', what: this.redact(what), host, start: at, end: at, ok: true });
  }

  /** The timeline as log lines, in order of start: `+start  duration  [host] what`. */
  timelineLines(): string[] {
    return this.timeline.map(
      (e) =>
        `+${e.start.toFixed(3)}s ${(Number.isNaN(e.end) ? '?' : (e.end - e.start).toFixed(3)).padStart(7)}s  ${e.kind === 'stage' ? '▶' : e.kind === 'mark' ? '•' : ' '} ${e.host ? `[${e.host}] ` : ''}${e.what}${e.ok ? '' : ' (failed)'}`,
    );
  }

  /** Prints the timeline as a collapsed group (a debug aid: the slowest step shows itself). */
  printTimeline(): void {
    if (this.timeline.length === 0) return;
    this.write(this.onGitHub ? '::group::Timeline' : '▶ Timeline');
    // Through info: the entries name what hosts said (release ids, group titles).
    this.info(
      [`loading the bundle took ${this.loaded.toFixed(3)} s before +0`, ...this.timelineLines()].join('\n'),
    );
    if (this.onGitHub) this.write('::endgroup::');
  }

  /** The stages' durations as one markdown line for the job summary. */
  stagesSummary(): string {
    const stages = this.timeline.filter((e) => e.kind === 'stage' && !Number.isNaN(e.end));
    if (stages.length === 0) return '';
    return `**Stages:** ${stages.map((e) => `${e.what.replace(/\|/g, '\\|')} ${(e.end - e.start).toFixed(2)} s`).join(' · ')}`;
  }

  output(name: string, value: string): void {
    const v = this.redact(value);
    this.outputs[name] = v;
    if (process.env.GITHUB_OUTPUT) setOutput(name, v);
  }

  summary(markdown: string): void {
    this.summaryParts.push(this.redact(markdown));
  }

  /**
   * Writes the job summary (GITHUB_STEP_SUMMARY), or prints it when not on
   * GitHub, unless the run failed: a terminal then gets the error alone.
   */
  flushSummary(failed = false): void {
    if (this.summaryParts.length === 0) return;
    let text = this.summaryParts.join('\n\n') + '\n';
    // GitHub refuses step summaries over 1 MiB.
    if (Buffer.byteLength(text) > 1000000) text = text.slice(0, 990000) + '\n\n(summary truncated)\n';
    if (process.env.GITHUB_STEP_SUMMARY) appendFileSync(process.env.GITHUB_STEP_SUMMARY, text);
    else if (!this.onGitHub && !failed) this.write('\n' + text);
    this.summaryParts = [];
  }
}
