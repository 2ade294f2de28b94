// A step on a host: what it does, the script that does it, and how its output
// reads. Built together and tested together (a unit test runs the script's
// parser on what the script prints), the way Kamal pairs a command with its use.

export interface Step<T> {
  /** What it does, for logs and errors: "building release 20250101_000000". */
  what: string;
  script: string;
  /** The script's stdout as a typed result. */
  parse(stdout: string): T;
}

export function step<T>(what: string, script: string, parse: (stdout: string) => T): Step<T> {
  return { what, script, parse };
}

/** A step whose output says nothing the caller needs. */
export function plainStep(what: string, script: string): Step<void> {
  return step(what, script, () => undefined);
}
