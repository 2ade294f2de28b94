// OpenSSH known_hosts lines: parsed once, matched per host, compared on the raw key.

import { createHash, createHmac } from 'node:crypto';
import type { HostKeyVerdict } from '../transport/ssh.js';
import { canonicalHost } from './hosts.js';

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

/** Length of an uncompressed ECDSA point (0x04, x, y) per curve. */
const POINT_LENGTH: Record<string, number> = { nistp256: 65, nistp384: 97, nistp521: 133 };

/**
 * Whether a key blob is one whole public key of its type in the SSH wire format
 * (RFC 4253, 5656, 8709), with nothing left over: a truncated or mangled key
 * would pass a check of its first field and fail only at connect time.
 */
function isWholeKey(key: Buffer, type: string): boolean {
  let at = 0;
  const next = (): Buffer | null => {
    if (key.length < at + 4) return null;
    const len = key.readUInt32BE(at);
    if (key.length < at + 4 + len) return null;
    const field = key.subarray(at + 4, at + 4 + len);
    at += 4 + len;
    return field;
  };
  /** A positive mpint: not empty, no sign bit, no needless leading zero. */
  const positive = (n: Buffer | null) =>
    !!n && n.length > 0 && n[0]! < 0x80 && !(n[0] === 0 && (n.length === 1 || n[1]! < 0x80));
  if (next()?.toString('latin1') !== type) return false;
  if (type === 'ssh-ed25519') {
    if (next()?.length !== 32) return false;
  } else if (type === 'ssh-rsa') {
    if (!positive(next()) || !positive(next())) return false;
  } else {
    const curve = type.slice('ecdsa-sha2-'.length);
    if (next()?.toString('latin1') !== curve) return false;
    const point = next();
    if (!point || point.length !== POINT_LENGTH[curve] || point[0] !== 4) return false;
  }
  return at === key.length;
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
    const expectedEmbedded = keyType.startsWith('rsa-sha2') ? 'ssh-rsa' : keyType;
    if (!isWholeKey(key, expectedEmbedded)) {
      return `line ${i + 1}: the key data is not a whole ${keyType} key (truncated or mangled?)`;
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

/** A known_hosts name without wildcards (`host` or `[host]:port`) in its canonical spelling. */
function canonicalName(name: string): string {
  const m = /^\[(.+)\]:(\d+)$/.exec(name);
  return m ? knownHostsName(canonicalHost(m[1]!), Number(m[2])) : canonicalHost(name);
}

/** A pattern matches a name: a glob as ssh reads it, a plain name in any spelling of the host. */
function patternMatches(pattern: string, name: string): boolean {
  return /[*?]/.test(pattern) ? globMatch(pattern, name) : canonicalName(pattern) === canonicalName(name);
}

function entryMatches(entry: KnownHostEntry, name: string): boolean {
  if (entry.hashed) {
    const h = createHmac('sha1', entry.hashed.salt).update(name).digest();
    return h.equals(entry.hashed.hash);
  }
  let matched = false;
  for (const p of entry.patterns) {
    if (p.startsWith('!')) {
      if (patternMatches(p.slice(1), name)) return false;
    } else if (patternMatches(p, name)) {
      matched = true;
    }
  }
  return matched;
}

/**
 * The entries that apply to host:port: under the name as written (what
 * ssh-keyscan prints) or its canonical spelling (lower case, as ssh looks
 * names up and hashes them; IPv6 compressed).
 */
export function entriesFor(entries: KnownHostEntry[], host: string, port: number): KnownHostEntry[] {
  const names = [...new Set([host, canonicalHost(host)])].map((h) => knownHostsName(h, port));
  return entries.filter((e) => names.some((name) => entryMatches(e, name)));
}

/** OpenSSH-style fingerprint of a raw public key blob: SHA256:base64-without-padding. */
export function fingerprint(key: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '');
}

/** The key type named inside a raw public key blob. */
export function keyTypeOf(key: Buffer): string {
  return readSshString(key, 0) ?? 'unknown';
}

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
