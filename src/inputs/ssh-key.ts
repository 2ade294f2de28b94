// The private key, read locally with ssh2 (the parser node-ssh uses when it
// connects), so a damaged key or a wrong passphrase is found before any host is
// contacted. Messages name a line or the problem, never the key's content: ssh2's
// own messages can quote key bytes, so they are never passed on.

import ssh2 from 'ssh2';

const BEGIN = /^-----BEGIN ([A-Z0-9 ]+)-----$/;
const END = /^-----END ([A-Z0-9 ]+)-----$/;
/** Lines a PEM body may have besides base64: the headers of an encrypted PEM key. */
const PEM_HEADER = /^(Proc-Type|DEK-Info): /;
/** How ssh2 says a key needs a passphrase (OpenSSH and PEM keys alike). */
const ENCRYPTED = /no passphrase given/;

/**
 * Checks the key's armour and reads it; returns the text (line endings
 * normalised, ending in a newline). An encrypted key is read in full by
 * passphraseProblem, once the passphrase is known.
 */
export function readPrivateKey(v: string): string | { error: string } {
  const text = v.replace(/\r\n?/g, '\n').trim() + '\n';
  const lines = text.trimEnd().split('\n');
  const begin = BEGIN.exec(lines[0] ?? '');
  if (!begin || !begin[1]!.endsWith('PRIVATE KEY'))
    return {
      error:
        'is not a private key: its first line is not -----BEGIN ... PRIVATE KEY----- (a public key or a fingerprint is not enough)',
    };
  const endAt = lines.findIndex((l) => END.test(l));
  if (endAt < 0) return { error: 'has no -----END ... PRIVATE KEY----- line (truncated?)' };
  if (END.exec(lines[endAt]!)![1] !== begin[1])
    return { error: `its END line (line ${endAt + 1}) does not match its BEGIN line` };
  if (endAt !== lines.length - 1) return { error: `has text after its END line (line ${endAt + 2})` };
  for (let i = 1; i < endAt; i++) {
    const line = lines[i]!.trim();
    if (line && !PEM_HEADER.test(line) && !/^[A-Za-z0-9+/]+={0,2}$/.test(line))
      return { error: `line ${i + 1} is not base64` };
  }
  const parsed = ssh2.utils.parseKey(text);
  if (parsed instanceof Error) {
    if (ENCRYPTED.test(parsed.message)) return text;
    return { error: 'cannot be read as a private key (truncated or damaged?)' };
  }
  if (!parsed.isPrivateKey()) return { error: 'is not a private key' };
  return text;
}

/**
 * Whether the passphrase opens a key readPrivateKey accepted; a message for
 * ssh-key-passphrase when it does not. A passphrase given with a key that has
 * none is not needed and, as with ssh, ignored.
 */
export function passphraseProblem(key: string, passphrase: string): string | null {
  const plain = ssh2.utils.parseKey(key);
  if (!(plain instanceof Error) || !ENCRYPTED.test(plain.message)) return null;
  if (!passphrase)
    return "Input 'ssh-key-passphrase' is required: ssh-key is encrypted; expected the key's passphrase.";
  if (ssh2.utils.parseKey(key, passphrase) instanceof Error)
    return "Input 'ssh-key-passphrase' does not decrypt ssh-key (a wrong passphrase, or a damaged key); expected the key's passphrase.";
  return null;
}
