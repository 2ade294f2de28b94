import type { ActionName } from '../../src/inputs/actions.js';
import { parseHosts } from '../../src/inputs/hosts.js';
import { fingerprint, parseKnownHosts, verifyHostKey } from '../../src/inputs/known-hosts.js';
import { InputError, parseInputs } from '../../src/inputs/parse.js';
import { FIXTURE_KEY } from '../support/keys.js';

// A real ed25519 host key line (public data) and a throwaway private key shape.
const KEY_B64 = 'AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl';
const KNOWN = `10.0.0.5 ssh-ed25519 ${KEY_B64}\n[web.example.com]:2222 ssh-ed25519 ${KEY_B64}`;
const PRIVATE = FIXTURE_KEY;

function raw(values: Record<string, string>) {
  return (name: string): string | undefined => values[name];
}
const valid = {
  hosts: '10.0.0.5',
  app: 'shop',
  'ssh-key': PRIVATE,
  'known-hosts': KNOWN,
  'release-id': '20250101_000000',
};

function problems(action: ActionName, values: Record<string, string>): string[] {
  try {
    parseInputs(action, raw(values));
    return [];
  } catch (err) {
    expect(err).toBeInstanceOf(InputError);
    return (err as InputError).problems;
  }
}

describe('hosts input', () => {
  test('parses every documented form', () => {
    const hosts = parseHosts('web1.example.com, deploy@10.0.0.5:2222\n[2001:db8::1]:22\nops@[::1]');
    expect(hosts).toEqual([
      { label: 'web1.example.com', host: 'web1.example.com', port: 22, roles: [] },
      { label: 'deploy@10.0.0.5:2222', host: '10.0.0.5', port: 2222, user: 'deploy', roles: [] },
      { label: '[2001:db8::1]:22', host: '2001:db8::1', port: 22, roles: [] },
      { label: 'ops@[::1]', host: '::1', port: 22, user: 'ops', roles: [] },
    ]);
  });
  test('roles', () => {
    expect(parseHosts('a.example roles=api,scheduler\nb.example')).toEqual([
      { label: 'a.example', host: 'a.example', port: 22, roles: ['api', 'scheduler'] },
      { label: 'b.example', host: 'b.example', port: 22, roles: [] },
    ]);
  });
  test('load balancer and upstream addresses', () => {
    expect(
      parseHosts(
        'lb.example roles=lb\nweb1 roles=api,scheduler upstream=10.1.0.1\nweb2 upstream=[fd00::2]:8080',
      ),
    ).toEqual([
      { label: 'lb.example', host: 'lb.example', port: 22, roles: ['lb'] },
      {
        label: 'web1',
        host: 'web1',
        port: 22,
        roles: ['api', 'scheduler'],
        upstream: { host: '10.1.0.1', port: 80 },
      },
      { label: 'web2', host: 'web2', port: 22, roles: [], upstream: { host: 'fd00::2', port: 8080 } },
    ]);
  });
  test.each([
    ['', /no host/],
    ['lb roles=lb upstream=10.0.0.1', /upstream= is for app hosts/],
    ['a, b roles=api', /one host per line/],
    ['a.example, a.example', /listed twice/],
    ['host:99999', /out of range/],
    ['host:abc', /not a number/],
    ['2001:db8::1', /brackets/],
    ['bad_host!', /not a valid host name/],
    ['$(id)', /not a valid host name/],
    ['a.example roles=api,root', /unknown role 'root'/],
    ['Root@host', /invalid user name/],
  ])('rejects %j', (text, message) => {
    expect(parseHosts(text)).toMatch(message);
  });
});

describe('known-hosts', () => {
  test('matches plain and [host]:port entries on the raw key', () => {
    const entries = parseKnownHosts(KNOWN);
    if (typeof entries === 'string') throw new Error(entries);
    const key = Buffer.from(KEY_B64, 'base64');
    expect(verifyHostKey(entries, '10.0.0.5', 22, key)).toEqual({ ok: true });
    expect(verifyHostKey(entries, 'web.example.com', 2222, key)).toEqual({ ok: true });
    const other = verifyHostKey(entries, '10.0.0.6', 22, key);
    expect(other.ok).toBe(false);
    const forged = Buffer.from(key);
    forged.writeUInt8(forged.readUInt8(forged.length - 1) ^ 1, forged.length - 1);
    const refused = verifyHostKey(entries, '10.0.0.5', 22, forged);
    expect(refused).toEqual({ ok: false, reason: expect.stringContaining(fingerprint(forged)) });
  });
  test.each([
    ['10.0.0.5 ssh-ed25519', /not a known_hosts line/],
    [`10.0.0.5 ssh-foo ${KEY_B64}`, /unknown key type/],
    ['10.0.0.5 ssh-ed25519 AAAA!!', /not base64/],
    [`10.0.0.5 ecdsa-sha2-nistp256 ${KEY_B64}`, /not a whole ecdsa-sha2-nistp256 key/],
    [`@cert-authority * ssh-ed25519 ${KEY_B64}`, /not supported/],
  ])('rejects %j', (text, message) => {
    expect(parseKnownHosts(text)).toMatch(message);
  });
});

describe('settings', () => {
  test('valid inputs give typed settings with defaults applied', () => {
    const settings = parseInputs('release', raw(valid));
    expect(settings['app-root']).toBe('/opt/shop');
    expect(settings['app-user']).toBe('shop');
    expect(settings['keep-releases']).toBe(5);
    expect(settings['shared-paths']).toEqual(['logs', 'uploads']);
    expect(settings['insecure-accept-any-host-key']).toBe(false);
  });

  test.each([
    ['release', { app: 'Shop' }, /Input 'app': 'Shop' is not valid; expected 2-32 lowercase/],
    [
      'release',
      { 'keep-releases': '-1' },
      /Input 'keep-releases': -1 is out of range; expected a whole number from 2 to 100/,
    ],
    ['release', { 'keep-releases': '1e9' }, /Input 'keep-releases': '1e9' is not a whole number/],
    [
      'release',
      { 'insecure-accept-any-host-key': 'yes' },
      /Input 'insecure-accept-any-host-key': 'yes' is not a boolean; expected true or false/,
    ],
    ['release', { 'app-root': '/opt/../etc' }, /Input 'app-root': .* contains \. or \.\./],
    ['release', { 'app-root': '/opt/my app' }, /Input 'app-root'/],
    ['release', { 'app-root': '/' }, /Input 'app-root'/],
    ['release', { source: '../outside' }, /Input 'source': '..\/outside' contains '..'/],
    ['release', { 'shared-paths': 'logs, /etc' }, /Input 'shared-paths': '\/etc' is absolute/],
    ['release', { 'pip-args': '--index-url $(curl evil)' }, /Input 'pip-args': word '\$\(curl' contains/],
    ['release', { 'known-hosts': '' }, /Input 'known-hosts' is required/],
    ['release', { hosts: '10.0.0.9' }, /Input 'known-hosts' has no key for host '10.0.0.9'/],
    [
      'release',
      { 'ssh-key': 'ssh-ed25519 AAAA... me@laptop' },
      /Input 'ssh-key': is not a private key: .*; expected a whole private key/,
    ],
    ['release', { 'release-id': '../x' }, /Input 'release-id'/],
    ['release', { 'app-user': 'root' }, /Input 'app-user': 'root' is reserved: a system account/],
    ['switch', { 'worker-command': 'python -m worker; reboot' }, /Input 'worker-command': word 'worker;'/],
    ['switch', { 'health-path': 'health' }, /Input 'health-path'/],
    ['switch', { 'release-id': '' }, /Input 'release-id' is required/],
    ['verify', { url: 'ftp://x' }, /Input 'url'/],
    ['verify', { 'expect-status': '700' }, /Input 'expect-status'/],
    ['switch', { hosts: 'a.example roles=scheduler\nb.example roles=scheduler' }, /exactly one scheduler/],
  ] as const)('%s rejects %j with a message naming the input', (action, override, message) => {
    const found = problems(action, { ...valid, ...override });
    expect(found.join('\n')).toMatch(message);
  });

  test('a secret value is never repeated in an error', () => {
    const secret = 'not-a-key-but-a-secret-value';
    expect(problems('release', { ...valid, 'ssh-key': secret }).join('\n')).not.toContain(secret);
  });
});
