// Scratch directories for unit tests that run root's scripts for real: those
// refuse to act below a directory another user could swap (src/remote/paths.ts),
// so the scratch lives under /root, not /tmp (the suite runs as root).
import { mkdtempSync } from 'node:fs';
import path from 'node:path';

export function rootSandbox(tag: string): string {
  return mkdtempSync(path.join('/root', `metalship-${tag}-`));
}
