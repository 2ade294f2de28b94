// A step on a host: what it does, the script that does it, and how its output
// reads. Built together and tested together (a unit test runs the script's
// parser on what the script prints), the way Kamal pairs a command with its use.

/** How a script ended: what a step that reports its own failure reads. */
export interface Ending {
  code: number;
  stderr: string;
}

export interface Step<T> {
  /** What it does, for logs and errors: "building release 20250101_000000". */
  what: string;
  script: string;
  /**
   * The script's stdout as a typed result. Unless the step reports its own
   * failures, a non-zero exit throws before parse is called (the ending is
   * then a success, and may be left out).
   */
  parse(stdout: string, ending?: Ending): T;
  /** A non-zero exit is part of the result (parse reads it) rather than an error. */
  reportsFailure?: boolean;
}

export function step<T>(what: string, script: string, parse: (stdout: string) => T): Step<T> {
  return { what, script, parse: (stdout) => parse(stdout) };
}

/** A step whose exit code and stderr are part of its result: parse gets them. */
export function reportingStep<T>(
  what: string,
  script: string,
  parse: (stdout: string, ending: Ending) => T,
): Step<T> {
  return {
    what,
    script,
    parse: (stdout, ending = { code: 0, stderr: '' }) => parse(stdout, ending),
    reportsFailure: true,
  };
}

/** A step whose output says nothing the caller needs. */
export function plainStep(what: string, script: string): Step<void> {
  return step(what, script, () => undefined);
}
