// Security figures of a provisioned test host: ssh-audit (run on this machine
// against the host's sshd) and lynis (run on the host). The provision e2e test
// writes them, with systemd-analyze's, to one file per Debian release;
// npm run reliability puts each release's in docs/reliability.md.

import { E2E_PREFIX } from './e2e.js';
import { debianRelease, type DebianRelease } from './hosts.js';

/** Where the provision test on hosts of `release` writes its figures. */
export const securityFile = (release: DebianRelease) =>
  `/run/metalship-e2e/${E2E_PREFIX}security-${release}.json`;
/** This run's file: the release of its test hosts. */
export const SECURITY_FILE = securityFile(debianRelease());

export interface SshAuditNote {
  /** "(kex) ecdh-sha2-nistp256" */
  item: string;
  level: 'fail' | 'warn';
  note: string;
}

export interface SecurityFigures {
  /** When the provision test measured them. */
  at: string;
  /** The Debian release of the host they were measured on. */
  release: DebianRelease;
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

/**
 * The security figures of each release, as markdown tables with a column per
 * release ('–' where one was not measured), for docs/reliability.md.
 */
export function securityTables(
  measured: { release: DebianRelease; figures: SecurityFigures | null }[],
): string[] {
  const out: string[] = [];
  const header = (first: string) => [
    `| ${first} | ${measured.map((m) => m.release).join(' | ')} |`,
    `|---|${measured.map(() => '---|').join('')}`,
  ];
  const unitNames = [...new Set(measured.flatMap((m) => m.figures?.units?.map((u) => u.unit) ?? []))];
  out.push(
    '',
    '`systemd-analyze security` of the generated units on each release, as measured in this run (exposure, 0 is best, 10 worst):',
    '',
    ...header('unit'),
    ...unitNames.map(
      (unit) =>
        `| ${unit} | ${measured
          .map((m) => {
            const u = m.figures?.units?.find((x) => x.unit === unit);
            return u ? `${u.exposure.toFixed(1)} ${u.rating}` : '–';
          })
          .join(' | ')} |`,
    ),
  );
  const audits = measured.map((m) => m.figures?.sshAudit);
  out.push(
    '',
    "ssh-audit from the machine against each host's sshd (failures / warnings):",
    '',
    ...header(''),
    `| the image's sshd | ${audits.map((a) => (a?.before ? `${a.before.fail} / ${a.before.warn}` : '–')).join(' | ')} |`,
    `| after provision | ${audits.map((a) => (a && a.after.fail >= 0 ? `**${a.after.fail} / ${a.after.warn}**` : '–')).join(' | ')} |`,
    `| ssh-audit | ${audits.map((a) => a?.version || '–').join(' | ')} |`,
  );
  measured.forEach((m, i) => {
    const notes = audits[i]?.after.notes ?? [];
    if (notes.length)
      out.push(
        '',
        `What still warns on ${m.release} is what this ssh-audit version does not know yet (the host's OpenSSH offers it on purpose):`,
        '',
        ...notes.map((n) => `- ${n.level}: \`${n.item}\`: ${n.note}`),
      );
  });
  const lynis = measured.map((m) => m.figures?.lynis);
  out.push(
    '',
    'lynis on each host (`lynis audit system`). A container limits it: `/proc/sys` is read-only, so the kernel settings cannot apply.',
    '',
    ...header(''),
    `| hardening index | ${lynis.map((l) => (l ? `**${l.hardeningIndex}**` : '–')).join(' | ')} |`,
    `| tests done | ${lynis.map((l) => l?.testsDone ?? '–').join(' | ')} |`,
    `| warnings | ${lynis.map((l) => l?.warnings.length ?? '–').join(' | ')} |`,
    `| suggestions | ${lynis.map((l) => l?.suggestions ?? '–').join(' | ')} |`,
    `| lynis | ${lynis.map((l) => l?.version || '–').join(' | ')} |`,
  );
  const lynisWarnings = measured.flatMap((m, i) =>
    (lynis[i]?.warnings ?? []).map(
      (w) =>
        `- ${m.release}: warning ${w}${w.startsWith('PKGS-7388') ? " (the test replaced the host's apt sources with its local repository)" : ''}`,
    ),
  );
  if (lynisWarnings.length) out.push('', ...lynisWarnings);
  const missing = measured.filter(
    (m) =>
      !m.figures?.units?.length ||
      !m.figures.sshAudit ||
      m.figures.sshAudit.after.fail < 0 ||
      !m.figures.lynis,
  );
  if (missing.length)
    out.push(
      '',
      `❌ Some security figures were not measured in this run on ${missing.map((m) => m.release).join(', ')} (see the failed tests above).`,
    );
  return out;
}
