// Throwaway SSH keys for the unit tests and the bad-input table: generated once
// with ssh-keygen for these tests, never installed on any host. Inputs are now
// read as real keys (src/inputs/ssh-key.ts), so a fake key no longer passes.

/** An unencrypted ed25519 private key. */
export const FIXTURE_KEY = `-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACCEhMTKUrrI1anX37aUN6hi6sbJCqp3sKfCnRaiXORgqgAAAKBlSSDDZUkg
wwAAAAtzc2gtZWQyNTUxOQAAACCEhMTKUrrI1anX37aUN6hi6sbJCqp3sKfCnRaiXORgqg
AAAED7WJ33RHWgpzUWXD+1Oa/A+F3+4/xoIsBE76/+0GueBYSExMpSusjVqdfftpQ3qGLq
xskKqnewp8KdFqJc5GCqAAAAFm1ldGFsc2hpcCB0ZXN0IGZpeHR1cmUBAgMEBQYH
-----END OPENSSH PRIVATE KEY-----
`;

/** An ed25519 private key encrypted with FIXTURE_PASSPHRASE. */
export const FIXTURE_KEY_ENCRYPTED = `-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABABZWhyG/
bxlrHL5pNi0lmBAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIC7RC9tu2aMWu9te
L1yEkIhdt4xMvQoWkEAZvZbwcACEAAAAsBLzqW7DfOlV6LpV4qb9Fi5aLA8EizIdrbkhdl
2QjsMxGuMmpH/KbeUJWJFC6xW2SzJ963zZgaulsVD4/uhHGUfkB4zueNpvjl5A0pOomISg
vnoM7Clft3g2bPiVV0Kd+gOrcZZ+eDg9mmDyBTCXP1QKrhGOh3929/fHqBFTn28D3l7OrA
wR9VUzhdFwMv8BztZdJUzfWPMgodd7fDVaZPnsfPoVwgJ5b1ecFwXx9dXG
-----END OPENSSH PRIVATE KEY-----
`;

export const FIXTURE_PASSPHRASE = 'fixture-passphrase-8x';
