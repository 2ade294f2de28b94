// The parsers of the security figures the provision e2e test measures.
import {
  parseLynisReport,
  parseSshAudit,
  securityTables,
  type SecurityFigures,
} from '../support/security.js';

// Excerpts of ssh-audit 2.5.0's output against the bare test image's sshd.
const SSH_AUDIT = `# general
(gen) banner: SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10
(gen) compression: enabled (zlib@openssh.com)

# key exchange algorithms
(kex) sntrup761x25519-sha512                -- [warn] unknown algorithm
(kex) curve25519-sha256                     -- [info] available since OpenSSH 7.4, Dropbear SSH 2018.76
(kex) ecdh-sha2-nistp256                    -- [fail] using weak elliptic curves
                                            \`- [info] available since OpenSSH 5.7, Dropbear SSH 2013.62
(kex) diffie-hellman-group-exchange-sha256 (2048-bit) -- [info] available since OpenSSH 4.4

# host-key algorithms
(key) ecdsa-sha2-nistp256                   -- [fail] using weak elliptic curves
                                            \`- [warn] using weak random number generator could reveal the key
                                            \`- [info] available since OpenSSH 5.7, Dropbear SSH 2013.62

# message authentication code algorithms
(mac) hmac-sha1                             -- [warn] using encrypt-and-MAC mode
                                            \`- [warn] using weak hashing algorithm

# fingerprints
(fin) ssh-ed25519: SHA256:6XcWj8WycM+/ToNOzLJUiyP3hpZsSJmNdLRqufruDIY

# algorithm recommendations (for OpenSSH 9.2)
(rec) -ecdh-sha2-nistp256                   -- kex algorithm to remove 
`;

test('ssh-audit: every fail and warn note, with the item it is about; info and recommendations are not notes', () => {
  expect(parseSshAudit(SSH_AUDIT)).toEqual([
    { item: '(kex) sntrup761x25519-sha512', level: 'warn', note: 'unknown algorithm' },
    { item: '(kex) ecdh-sha2-nistp256', level: 'fail', note: 'using weak elliptic curves' },
    { item: '(key) ecdsa-sha2-nistp256', level: 'fail', note: 'using weak elliptic curves' },
    {
      item: '(key) ecdsa-sha2-nistp256',
      level: 'warn',
      note: 'using weak random number generator could reveal the key',
    },
    { item: '(mac) hmac-sha1', level: 'warn', note: 'using encrypt-and-MAC mode' },
    { item: '(mac) hmac-sha1', level: 'warn', note: 'using weak hashing algorithm' },
  ]);
  expect(parseSshAudit('')).toEqual([]);
});

test('lynis: the hardening index, tests done, warnings and the number of suggestions', () => {
  const dat = [
    '# Lynis Report',
    'lynis_version=3.0.8',
    'suggestion[]=DEB-0280|Install libpam-tmpdir to set $TMP and $TMPDIR for PAM sessions|-|-|',
    'warning[]=PKGS-7392|Found one or more vulnerable packages.|-|-|',
    'suggestion[]=SSH-7408|Consider hardening SSH configuration|AllowTcpForwarding (set YES to NO)|-|',
    'lynis_tests_done=254',
    'hardening_index=63',
  ].join('\n');
  expect(parseLynisReport(dat)).toEqual({
    version: '3.0.8',
    hardeningIndex: 63,
    testsDone: 254,
    warnings: ['PKGS-7392: Found one or more vulnerable packages.'],
    suggestions: 2,
  });
  expect(() => parseLynisReport('lynis_version=3.0.8\n')).toThrow(/no hardening_index/);
});

describe('securityTables', () => {
  const measured: SecurityFigures = {
    at: '2026-12-01T00:00:00Z',
    release: 'bookworm',
    units: [{ unit: 'shop-api@.service', exposure: 1.3, rating: 'OK' }],
    sshAudit: { version: '3.3.0', before: { fail: 4, warn: 13 }, after: { fail: 0, warn: 3, notes: [] } },
    lynis: {
      version: '3.0.8',
      hardeningIndex: 63,
      testsDone: 254,
      warnings: ['PKGS-7388: x'],
      suggestions: 20,
    },
  };
  const md = securityTables([
    { release: 'bullseye', figures: null },
    { release: 'bookworm', figures: measured },
    { release: 'trixie', figures: { ...measured, release: 'trixie', lynis: undefined } },
  ]).join('\n');

  test('a column per release, a dash where a figure was not measured', () => {
    expect(md).toContain('| unit | bullseye | bookworm | trixie |');
    expect(md).toContain('| shop-api@.service | – | 1.3 OK | 1.3 OK |');
    expect(md).toContain('| after provision | – | **0 / 3** | **0 / 3** |');
    expect(md).toContain('| hardening index | – | **63** | – |');
    expect(md).toContain('- bookworm: warning PKGS-7388: x');
  });

  test('names the releases whose figures are missing', () => {
    expect(md).toMatch(/❌ .* on bullseye, trixie /);
  });
});
