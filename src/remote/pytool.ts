// The Python tool the scripts run on the host: src/remote/py/mstool.py, read as
// text here (ncc ships it beside each bundle that needs it), sent inside the
// script and run with python3 -I. Scripts define it once with pyToolDefinition()
// and call `mstool <cmd> ...`.

import { readFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import { textVar } from './sh.js';

export const PY_TOOL = readFileSync(new URL('./py/mstool.py', import.meta.url), 'utf8');

/**
 * The tool as sent: a line of Python that unpacks and runs it. bash reads a
 * script on stdin a byte at a time (it must leave what follows for the
 * script's commands), and the plain source, in nearly every script, cost tens
 * of milliseconds each: packed it is a third of the size.
 */
const PY_TOOL_PACKED = `import base64, zlib; exec(zlib.decompress(base64.b64decode('${deflateSync(PY_TOOL, { level: 9 }).toString('base64')}')))`;

/** The user health probes connect as: an app controls its socket's directory, so root never follows it. */
export const PROBE_USER = 'nobody';

/**
 * Script lines that define `mstool`, a shell function running the Python tool
 * with python3 (isolated: neither the working directory nor PYTHON* variables
 * can bring other code in), and `mstool_as USER ...` for the same as another user.
 */
export function pyToolDefinition(): string {
  return [
    textVar('MSTOOL_SRC', PY_TOOL_PACKED),
    // Each script calls one of the two or both: the other is there unused.
    '# shellcheck disable=SC2317',
    'mstool() { python3 -I -c "$MSTOOL_SRC" "$@"; }',
    '# shellcheck disable=SC2317',
    // Another user's process gets no copy of a switch's mark channel (descriptor 7: see checksStart).
    'mstool_as() { local user=$1; shift; runuser -u "$user" -- python3 -I -c "$MSTOOL_SRC" "$@" 7>&-; }',
  ].join('\n');
}
