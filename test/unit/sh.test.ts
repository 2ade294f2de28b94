import { execFileSync } from 'node:child_process';
import { quote, raw, sh, ensureFile, writeFileAtomic } from '../../src/remote/sh.js';
import { remoteScript, wrapScript } from '../../src/remote/session.js';

const HOSTILE = [
  `it's`,
  '$(touch /tmp/pwned)',
  '`id`',
  'a\nb',
  'x; rm -rf /',
  '../../etc/passwd',
  '"dq"',
  '$HOME',
  '\\',
  '*',
  ' lead',
  '-n',
];

/** Runs a script with bash and returns its stdout. */
function bash(script: string): string {
  return execFileSync('bash', ['-c', script], { encoding: 'utf8' });
}

describe('shell quoting', () => {
  test.each(HOSTILE)('a hostile value %j stays one literal word', (value) => {
    expect(bash(sh`printf '%s' ${value}`)).toBe(value);
  });

  test('arrays become one quoted word per item', () => {
    expect(bash(sh`printf '[%s]' ${['a b', "c'd", '$(x)']}`)).toBe("[a b][c'd][$(x)]");
  });

  test('raw() is the only way to pass shell syntax through', () => {
    expect(bash(sh`x=1; echo ${raw('$x')} ${'$x'}`)).toBe('1 $x\n');
  });

  test('safe words are left bare, empty strings are quoted', () => {
    expect(quote('/opt/app/releases/20250101_000000')).toBe('/opt/app/releases/20250101_000000');
    expect(quote('')).toBe("''");
  });

  test('NUL bytes are refused', () => {
    expect(() => quote('a\0b')).toThrow(/NUL/);
  });

  test('file writers keep content byte for byte, even with a heredoc delimiter inside', () => {
    const content = `line $(id) \`x\`\nMETALSHIP_EOF\n'quoted'\n`;
    const dir = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
    bash(writeFileAtomic(`${dir}/a`, content, { mode: '600' }));
    expect(bash(`cat ${dir}/a`)).toBe(content);
    expect(bash(`stat -c %a ${dir}/a`).trim()).toBe('600');
    expect(bash(ensureFile(`${dir}/b`, content))).toMatch(/changed/);
    expect(bash(ensureFile(`${dir}/b`, content))).toBe('');
    expect(bash(`cat ${dir}/b`)).toBe(content);
    // A changed file is rewritten; a temp file an interrupted run left goes.
    expect(bash(ensureFile(`${dir}/b`, 'other\n'))).toMatch(/changed/);
    expect(bash(`cat ${dir}/b`)).toBe('other\n');
    bash(`touch ${dir}/b.metalship-new`);
    expect(bash(ensureFile(`${dir}/b`, 'other\n'))).toBe('');
    expect(bash(`ls ${dir}`)).toBe('a\nb\n');
    bash(`rm -rf ${dir}`);
  });

  test('wrapped scripts parse fully before running, so trailing data is never executed', () => {
    const out = execFileSync('bash', ['-se'], {
      input: wrapScript('head -c 5') + 'HELLO; touch /tmp/metalship-never',
      encoding: 'utf8',
    });
    expect(out).toBe('HELLO');
  });

  test('as sent (bash -se reading a length, then the script whole): what follows is data, a script cut short runs none of itself', () => {
    const dir = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
    try {
      // Multibyte text counts in bytes: the data after it still starts where it should.
      const sent = remoteScript(`echo 'é ✓'; head -c 5; touch ${dir}/ran`);
      const out = execFileSync('bash', ['-se'], {
        input: sent + `HELLO; touch ${dir}/never`,
        encoding: 'utf8',
      });
      expect(out).toBe('é ✓\nHELLO');
      expect(execFileSync('ls', [dir], { encoding: 'utf8' })).toBe('ran\n');
      execFileSync('rm', ['-f', `${dir}/ran`]);
      // Cut anywhere, the preamble included: nothing of it runs (bash fails, or reads nothing),
      // not even its session record (a cut name would leave a file; 'z' starts no run's token).
      const session = remoteScript(`touch ${dir}/ran`, `zz${process.pid}`);
      const cuts = [session.length - 2, session.length - 3];
      for (let cut = 1; cut < session.length - 1; cut += 7) cuts.push(cut);
      for (const cut of cuts) {
        try {
          execFileSync('bash', ['-se'], { input: session.slice(0, cut), stdio: 'pipe' });
        } catch {
          // a syntax error, as expected
        }
      }
      // (Only its last newline missing, the script is whole, and runs.)
      expect(execFileSync('ls', [dir], { encoding: 'utf8' })).toBe('');
      const records = 'ls /run/metalship-sessions 2>/dev/null | grep ^z || true';
      expect(execFileSync('bash', ['-c', records], { encoding: 'utf8' })).toBe('');
    } finally {
      execFileSync('rm', ['-rf', dir]);
    }
  });

  test('wrapped scripts run with errexit, nounset and pipefail', () => {
    for (const body of ['false\necho after', 'echo $UNSET_VAR_X', 'false | true\necho after']) {
      expect(() => execFileSync('bash', ['-se'], { input: wrapScript(body), stdio: 'pipe' })).toThrow();
    }
  });
});
