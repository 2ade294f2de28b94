// Whether bash parses a script as the transport sends it (wrapped): the syntax
// errors it reports, '' when none.
import { spawnSync } from 'node:child_process';
import { wrapScript } from '../../src/remote/session.js';

export function bashErrors(script: string): string {
  const r = spawnSync('bash', ['-n'], { input: wrapScript(script, 'abc123'), encoding: 'utf8' });
  return r.status === 0 ? '' : r.stderr;
}
