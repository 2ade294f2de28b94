// Security figures of a provisioned test host: ssh-audit (run on this machine
// against the host's sshd) and lynis (run on the host). The provision e2e test
// writes them, with systemd-analyze's, to SECURITY_FILE; npm run reliability
// puts them in docs/reliability.md.

import { E2E_PREFIX } from './e2e.js';

export const SECURITY_FILE = `/run/metalship-e2e/${E2E_PREFIX}security.json`;

export interface SshAuditNote {
  /** "(kex) ecdh-sha2-nistp256" */
  item: string;
  level: 'fail' | 'warn';
  note: string;
}

export interface SecurityFigures {
  /** When the provision test measured them. */
  at: string;
  units?: { unit: string; exposure: number; rating: string }[];
  sshAudit?: {
    version: string;
    /** Before provision (the bare image's sshd) and after. */
    before?: { fail: number; warn: number };
    after: { fail: number; warn: number; notes: SshAuditNote[] };
  };
  lynis?: {
    version: string;
    hardeningIndex: number;
    testsDone: number;
    warnings: string[];
    suggestions: number;
  };
}

/**
 * The fail and warn notes of ssh-audit's text output (`ssh-audit -n HOST`): one
 * per note, each with the algorithm or item it is about.
 */
export function parseSshAudit(text: string): SshAuditNote[] {
  const notes: SshAuditNote[] = [];
  let item = '';
  for (const line of text.split('\n')) {
    const head = /^\((\w+)\) (.*?)\s+-- \[(\w+)\] (.*)$/.exec(line);
    const more = /^\s+`- \[(\w+)\] (.*)$/.exec(line);
    let level = '';
    let note = '';
    if (head) {
      item = `(${head[1]}) ${head[2]!.trim()}`;
      level = head[3]!;
      note = head[4]!.trim();
    } else if (more && item) {
      level = more[1]!;
      note = more[2]!.trim();
    } else if (/^\S/.test(line)) {
      item = '';
    }
    if (level === 'fail' || level === 'warn') notes.push({ item, level, note });
  }
  return notes;
}

/** The figures in lynis's report file (/var/log/lynis-report.dat). */
export function parseLynisReport(dat: string): NonNullable<SecurityFigures['lynis']> {
  const values = (key: string) =>
    dat
      .split('\n')
      .filter((l) => l.startsWith(`${key}=`))
      .map((l) => l.slice(key.length + 1));
  const one = (key: string) => values(key)[0] ?? '';
  const index = Number(one('hardening_index'));
  if (!one('hardening_index') || !Number.isInteger(index))
    throw new Error('the lynis report has no hardening_index');
  return {
    version: one('lynis_version'),
    hardeningIndex: index,
    testsDone: Number(one('lynis_tests_done')),
    warnings: values('warning[]').map((w) => w.split('|').slice(0, 2).join(': ')),
    suggestions: values('suggestion[]').length,
  };
}
