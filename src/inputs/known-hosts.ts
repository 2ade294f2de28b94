// OpenSSH known_hosts lines: parsed once, matched per host, compared on the raw key.

import { createHash, createHmac } from 'node:crypto';

export const HOST_KEY_TYPES = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
] as const;

export interface KnownHostEntry {
  patterns: string[];
  /** `|1|salt|hash` entries hide the host name. */
  hashed?: { salt: Buffer; hash: Buffer };
  revoked: boolean;
  keyType: string;
  key: Buffer;
  line: number;
}

function readSshString(buf: Buffer, offset: number): string | null {
  if (buf.length < offset + 4) return null;
  const len = buf.readUInt32BE(offset);
  if (buf.length < offset + 4 + len) return null;
  return buf.subarray(offset + 4, offset + 4 + len).toString('latin1');
}

/** Parses known_hosts text; returns the entries or a message naming the bad line. */
export function parseKnownHosts(text: string): KnownHostEntry[] | string {
  const entries: KnownHostEntry[] = [];
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').trim();
    if (!line || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    let revoked = false;
    if (fields[0]?.startsWith('@')) {
      const marker = fields.shift();
      if (marker === '@revoked') revoked = true;
      else
        return `line ${i + 1}: marker '${marker}' is not supported (use plain host key lines, or @revoked)`;
    }
    const [hostField, keyType, keyB64] = fields;
    if (!hostField || !keyType || !keyB64) {
      return `line ${i + 1} is not a known_hosts line (expected 'host key-type base64-key', as ssh-keyscan prints)`;
    }
    if (!(HOST_KEY_TYPES as readonly string[]).includes(keyType)) {
      return `line ${i + 1}: unknown key type '${keyType.slice(0, 40)}' (expected one of ${HOST_KEY_TYPES.join(', ')})`;
    }
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(keyB64)) return `line ${i + 1}: the key is not base64`;
    const key = Buffer.from(keyB64, 'base64');
    const embedded = readSshString(key, 0);
    const expectedEmbedded = keyType.startsWith('rsa-sha2') ? 'ssh-rsa' : keyType;
    if (embedded !== expectedEmbedded) {
      return `line ${i + 1}: the key data is not a ${keyType} key (truncated or mangled?)`;
    }
    const entry: KnownHostEntry = { patterns: [], revoked, keyType: expectedEmbedded, key, line: i + 1 };
    if (hostField.startsWith('|1|')) {
      const [, , salt, hash] = hostField.split('|');
      if (!salt || !hash) return `line ${i + 1}: malformed hashed host name`;
      entry.hashed = { salt: Buffer.from(salt, 'base64'), hash: Buffer.from(hash, 'base64') };
    } else {
      entry.patterns = hostField.split(',');
    }
    entries.push(entry);
  }
  if (entries.length === 0) return 'no host key lines found';
  return entries;
}

/** The name known_hosts uses for host:port: `host` on port 22, `[host]:port` otherwise. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(
    '^' +
      pattern
        .split('')
        .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
        .join('') +
      '$',
    'i',
  );
  return re.test(name);
}

function entryMatches(entry: KnownHostEntry, name: string): boolean {
  if (entry.hashed) {
    const h = createHmac('sha1', entry.hashed.salt).update(name).digest();
    return h.equals(entry.hashed.hash);
  }
  let matched = false;
  for (const p of entry.patterns) {
    if (p.startsWith('!')) {
      if (globMatch(p.slice(1), name)) return false;
    } else if (globMatch(p, name)) {
      matched = true;
    }
  }
  return matched;
}

/** The entries that apply to host:port. */
export function entriesFor(entries: KnownHostEntry[], host: string, port: number): KnownHostEntry[] {
  const name = knownHostsName(host, port);
  return entries.filter((e) => entryMatches(e, name));
}

/** OpenSSH-style fingerprint of a raw public key blob: SHA256:base64-without-padding. */
export function fingerprint(key: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '');
}

/** The key type named inside a raw public key blob. */
export function keyTypeOf(key: Buffer): string {
  return readSshString(key, 0) ?? 'unknown';
}

export type HostKeyVerdict = { ok: true } | { ok: false; reason: string };

/** Decides whether the key a server offered is pinned for host:port. */
export function verifyHostKey(
  entries: KnownHostEntry[],
  host: string,
  port: number,
  offered: Buffer,
): HostKeyVerdict {
  const applicable = entriesFor(entries, host, port);
  const type = keyTypeOf(offered);
  if (applicable.some((e) => e.revoked && e.key.equals(offered))) {
    return {
      ok: false,
      reason: `host key ${type} ${fingerprint(offered)} is marked @revoked in known-hosts`,
    };
  }
  if (applicable.some((e) => !e.revoked && e.key.equals(offered))) return { ok: true };
  const pinned = applicable.filter((e) => !e.revoked);
  if (pinned.length === 0) {
    return {
      ok: false,
      reason: `known-hosts has no key for ${knownHostsName(host, port)}; the host offered ${type} ${fingerprint(offered)}`,
    };
  }
  return {
    ok: false,
    reason:
      `the host offered ${type} ${fingerprint(offered)}, which does not match the pinned ` +
      pinned.map((e) => `${e.keyType} ${fingerprint(e.key)}`).join(', ') +
      ' (a changed server, or someone in between)',
  };
}

/** The host key algorithms to offer so the server picks a pinned key type. */
export function pinnedAlgorithms(entries: KnownHostEntry[], host: string, port: number): string[] {
  const types = new Set(
    entriesFor(entries, host, port)
      .filter((e) => !e.revoked)
      .map((e) => e.keyType),
  );
  const algos: string[] = [];
  for (const t of types) {
    if (t === 'ssh-rsa') algos.push('rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa');
    else algos.push(t);
  }
  return algos;
}
