// The trust boundary of inputs: secrets never echoed, keys read before any host
// is contacted, values that mean the same taken as the same, and the forms
// GitHub passes (trimmed ends) accepted.
import ssh2 from 'ssh2';
import { createHmac, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runAction } from '../../src/actions/run.js';
import { ACTION_NAMES, actions, type ActionName } from '../../src/inputs/actions.js';
import type { Field } from '../../src/inputs/fields.js';
import { parseKnownHosts } from '../../src/inputs/known-hosts.js';
import { InputError, parseInputs, trimInput } from '../../src/inputs/parse.js';
import { Log } from '../../src/log.js';
import { BASE } from '../support/bad-inputs.js';
import { FIXTURE_KEY, FIXTURE_KEY_ENCRYPTED, FIXTURE_PASSPHRASE } from '../support/keys.js';

const KEY_B64 = 'AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl';

function problems(action: ActionName, values: Record<string, string>): string[] {
  try {
    parseInputs(action, (name) => ({ ...BASE, ...values })[name]);
    return [];
  } catch (err) {
    expect(err).toBeInstanceOf(InputError);
    return (err as InputError).problems;
  }
}

const parse = <A extends ActionName>(action: A, values: Record<string, string>) =>
  parseInputs(action, (name) => ({ ...BASE, ...values })[name]);

const inputsOf = (action: ActionName) => Object.entries(actions[action].inputs as Record<string, Field>);

describe('a secret is never echoed', () => {
  // Distinctive content (base64-clean, so it also reaches the key parser), and pieces of it.
  const MARK = 'Zq9xK7plughW';
  const PIECES = [MARK, 'Zq9xK', 'K7plu', 'plughW'];
  const BEGIN = '-----BEGIN OPENSSH PRIVATE KEY-----';
  const END = '-----END OPENSSH PRIVATE KEY-----';
  const keyLines = FIXTURE_KEY.trimEnd().split('\n');
  const MALFORMED = [
    MARK,
    `${MARK}\n${MARK}`,
    `${MARK}: redis://:${MARK}@cache/0?x=${MARK}`,
    `A=1\n${MARK} ${MARK}=x`,
    `export ${MARK}-${MARK}=1`,
    `SECRET_${MARK}=ab`,
    `${MARK}_PASSWORD=${MARK.slice(0, 2)}`,
    `A="${MARK}\n${MARK}`,
    `A=${MARK}\u0000${MARK}`,
    `${MARK}\u001b${MARK}`,
    MARK.slice(0, 5),
    `${MARK} ${MARK}`.repeat(100),
    `${BEGIN}\n${MARK}\n${END}`,
    `${BEGIN}\n${MARK}==\n-----END RSA PRIVATE KEY-----`,
    `${BEGIN}\n${MARK}\n${END}\n${MARK}`,
    `${BEGIN}\n${MARK} ${MARK}\n${END}`,
    [keyLines[0], `${MARK}${keyLines[1]!.slice(MARK.length)}`, ...keyLines.slice(2)].join('\n'),
    FIXTURE_KEY.replace(keyLines[3]!, MARK),
    `-----BEGIN ${MARK} PRIVATE KEY-----\n${MARK}\n-----END ${MARK} PRIVATE KEY-----`,
  ];
  const cases = ACTION_NAMES.flatMap((action) =>
    inputsOf(action)
      .filter(([, f]) => f.secret)
      .map(([input]): [ActionName, string] => [action, input]),
  );

  test('every secret input of every action is covered', () => {
    const secrets = new Set(cases.map(([, input]) => input));
    expect([...secrets].sort()).toEqual([
      'alert-heartbeat-url',
      'alert-webhook',
      'db-password',
      'env',
      'github-token',
      'redis-password',
      'redis-previous-password',
      'ssh-key',
      'ssh-key-passphrase',
    ]);
  });

  test.each(cases)('%s: %s', (action, input) => {
    let refused = 0;
    for (const value of MALFORMED) {
      const found = problems(action, { [input]: value });
      if (found.some((p) => p.startsWith(`Input '${input}'`))) refused++;
      for (const p of found)
        for (const piece of PIECES) expect([value, p]).toEqual([value, expect.not.stringContaining(piece)]);
    }
    // Most of these are refused; the point is what the refusals say.
    expect(refused).toBeGreaterThan(MALFORMED.length / 2);
  });

  test('secret messages still say where and what', () => {
    expect(problems('provision', { env: `A=1\n\n${MARK}: x=${MARK}` })).toEqual([
      "Input 'env': line 3: the text before the first = is not a key (letters, digits and _, not starting with a digit); expected KEY=value lines as systemd reads them: keys of letters, digits and _; values plain, in single quotes or in double quotes.",
    ]);
    expect(problems('deploy', { 'ssh-key-passphrase': `${MARK}\n${MARK}` })[0]).toMatch(
      /^Input 'ssh-key-passphrase': has a line break or other control character at position 13/,
    );
  });

  test('neither the log nor the job summary of a refused run holds the secret', async () => {
    const lines: string[] = [];
    const env = `A=1\n${MARK}: redis://:${MARK}@cache/0?x=1`;
    // The summary of a failed run goes to the job summary file only (a terminal gets the error alone).
    const dir = mkdtempSync(path.join(tmpdir(), 'metalship-summary-'));
    const before = process.env.GITHUB_STEP_SUMMARY;
    process.env.GITHUB_STEP_SUMMARY = path.join(dir, 'summary');
    let r: Awaited<ReturnType<typeof runAction>>;
    try {
      r = await runAction(
        'provision',
        () => Promise.reject(new Error('no host may be contacted')),
        (name) => ({ ...BASE, env, 'db-password': MARK.slice(0, 4) })[name as 'env'] ?? '',
        new Log((l) => lines.push(l)),
      );
      lines.push(readFileSync(process.env.GITHUB_STEP_SUMMARY, 'utf8'));
    } finally {
      if (before === undefined) delete process.env.GITHUB_STEP_SUMMARY;
      else process.env.GITHUB_STEP_SUMMARY = before;
      rmSync(dir, { recursive: true, force: true });
    }
    process.exitCode = undefined;
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/Input 'env': line 2/);
    expect(r.error).toMatch(/Input 'db-password': is shorter than 8 characters/);
    const log = lines.join('\n');
    expect(log).toMatch(/No host was contacted/);
    for (const piece of [...PIECES, MARK.slice(0, 4)]) expect(log).not.toContain(piece);
  });
});

describe('ssh-key is read with its passphrase before any host is contacted', () => {
  test.each(ACTION_NAMES)('%s: a valid encrypted key with the right passphrase passes', (action) => {
    const s = parse(action, { 'ssh-key': FIXTURE_KEY_ENCRYPTED, 'ssh-key-passphrase': FIXTURE_PASSPHRASE });
    expect(s['ssh-key']).toBe(FIXTURE_KEY_ENCRYPTED);
  });
  test('a passphrase given with a key that has none is not needed, and ignored as ssh does', () => {
    expect(parse('release', { 'ssh-key-passphrase': 'not-needed-here' })['ssh-key']).toBe(FIXTURE_KEY);
  });
  test('the key is taken with CRLF line ends, indentation or blank lines around it', () => {
    const messy = '\n\n' + FIXTURE_KEY.replace(/\n/g, '\r\n') + '\r\n\n';
    expect(parse('release', { 'ssh-key': messy })['ssh-key']).toBe(FIXTURE_KEY);
  });
  test('a wrong passphrase is found, naming ssh-key-passphrase and nothing of either secret', () => {
    const found = problems('deploy', {
      'ssh-key': FIXTURE_KEY_ENCRYPTED,
      'ssh-key-passphrase': 'Zq9xK7-wrong',
    });
    expect(found).toEqual([
      "Input 'ssh-key-passphrase' does not decrypt ssh-key (a wrong passphrase, or a damaged key); expected the key's passphrase.",
    ]);
  });
});

describe('inputs are trimmed at their ends, as GitHub does', () => {
  const ints = ACTION_NAMES.flatMap((action) =>
    inputsOf(action)
      .filter(([, f]) => f.expected.startsWith('a whole number'))
      .map(([input, f]): [ActionName, string, string] => [action, input, f.default!]),
  );
  test('every int input of every action has a default to try', () => {
    expect(ints.length).toBeGreaterThan(40);
    for (const [, , def] of ints) expect(def).toMatch(/^\d+$/);
  });
  test.each(ints)('%s: %s = "<n>\\n" is accepted', (action, input, def) => {
    const s = parse(action, { [input]: `${def}\n` }) as Record<string, unknown>;
    expect(s[input]).toBe(Number(def));
    expect((parse(action, { [input]: ` \t${def} \r\n` }) as Record<string, unknown>)[input]).toBe(
      Number(def),
    );
  });
  test.each([
    ['deploy', 'health-path', '/health?a=1&b=2', '/health?a=1&b=2'],
    ['deploy', 'verify-path', '/ready?deep=1&x=%20', '/ready?deep=1&x=%20'],
    ['backup-verify', 'smoke-path', '/health?db=1&cache=0\n', '/health?db=1&cache=0'],
    ['deploy', 'app-root', '  /srv//shop/ \n', '/srv/shop'],
    ['deploy', 'worker-command', 'python -m worker\n', ['python', '-m', 'worker']],
    ['deploy', 'url', 'https://example.com/health?token=a&b=1\n', 'https://example.com/health?token=a&b=1'],
    ['provision', 'firewall-allow', '60000:61000/udp, 8080\n', ['60000:61000/udp', '8080/tcp']],
    ['provision', 'db-remote-cidrs', '10.0.0.0/8\nfd00::/8\n', ['10.0.0.0/8', 'fd00::/8']],
    ['provision', 'node-exporter-listen', ':9100', ':9100'],
    ['provision', 'node-exporter-listen', '[::1]:9100', '[::1]:9100'],
    ['provision', 'static-dir', '/opt/shop/current/static', '/opt/shop/current/static'],
    ['provision', 'static-dir', '/opt/shop/shared/static/', '/opt/shop/shared/static'],
    ['provision', 'static-dir', '/srv/www/shop-static', '/srv/www/shop-static'],
    ['provision', 'db-password', '  long-enough-pw \n', 'long-enough-pw'],
    ['provision', 'env', 'PORT=80\nDEBUG=1\nAPI_KEY=\n\n', { PORT: '80', DEBUG: '1', API_KEY: '' }],
    ['deploy', 'shared-paths', './logs/, uploads//x, .env', ['logs', 'uploads/x', '.env']],
    ['provision', 'app-root', '/var/lib/shop', '/var/lib/shop'],
    ['provision', 'backup-dir', '/srv/backups/shop', '/srv/backups/shop'],
    ['deploy', 'app-user', 'shop-svc', 'shop-svc'],
  ] as const)('%s: %s = %j is accepted', (action, input, value, expected) => {
    const s = parse(action, { [input]: value }) as Record<string, unknown>;
    const got = s[input];
    expect(input === 'env' ? (got as { values: unknown }).values : got).toEqual(expected);
  });
  test('multi-line values keep their line numbers: leading blank lines are not dropped', () => {
    expect(trimInput('\n\n  A=1\nB\n\n', true)).toBe('\n\n  A=1\nB');
    expect(trimInput('  \n A=1 \n', true)).toBe('\n A=1');
    expect(trimInput('  30\n')).toBe('30');
    expect(problems('provision', { env: '\n\nNOT A LINE' })[0]).toMatch(
      /^Input 'env': line 3 is not KEY=value/,
    );
  });
  test('.env keeps its inner layout and gets one final newline', () => {
    const env = 'A=1\nB="two\n  lines"\n';
    expect(parse('provision', { env: env + '\n\n' }).env.text).toBe(env);
  });
  test('{app} in a secret is kept as written', () => {
    expect(parse('provision', { 'db-password': 'pw-{app}-pw' })['db-password']).toBe('pw-{app}-pw');
  });
});

describe('one host in two spellings is one host', () => {
  test.each([
    ['[0:0:0:0:0:0:0:1]', '::1'],
    ['[::1]', '0:0:0:0:0:0:0:1'],
    ['Web1.Example.COM', 'web1.example.com'],
    ['web1.example.com.', 'web1.example.com'],
    ['web1.example.com', 'WEB1.example.com'],
  ])('hosts %j finds the known_hosts line written %j', (hosts, known) => {
    expect(problems('deploy', { hosts, 'known-hosts': `${known} ssh-ed25519 ${KEY_B64}` })).toEqual([]);
  });
  test('a hashed known_hosts line of the lower-case name matches a name written in capitals', () => {
    const salt = Buffer.from('0123456789abcdef0123');
    const hash = createHmac('sha1', salt).update('web1.example.com').digest('base64');
    const line = `|1|${salt.toString('base64')}|${hash} ssh-ed25519 ${KEY_B64}`;
    expect(problems('deploy', { hosts: 'WEB1.example.com', 'known-hosts': line })).toEqual([]);
  });
  test.each([
    ['10.0.0.5', '10.0.0.5'],
    ['ops@10.0.0.5:22', '10.0.0.5'],
    ['web1.example.com', 'WEB1.example.com.'],
    ['[::1]', '[0:0:0:0:0:0:0:1]'],
    ['[::1]', '[0::1]'],
  ])('migrate-host %j is found in hosts %j', (migrateHost, hosts) => {
    const known = `10.0.0.5,web1.example.com,::1 ssh-ed25519 ${KEY_B64}`;
    expect(problems('deploy', { hosts, 'known-hosts': known, 'migrate-host': migrateHost })).toEqual([]);
  });
});

/**
 * An ed25519 public key in SSH's wire format, from Node's own key: ssh2's
 * generator drops the key's leading zero byte (one key in 256 comes out 31
 * bytes long, which ssh-keyscan never prints).
 */
function ed25519Blob(): string {
  const x = generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }).x!;
  const field = (b: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  return Buffer.concat([field(Buffer.from('ssh-ed25519')), field(Buffer.from(x, 'base64url'))]).toString(
    'base64',
  );
}

describe('known-hosts key blobs are read whole', () => {
  const kinds: [string, object][] = [
    ['rsa', { bits: 2048 }],
    ['ecdsa', { bits: 256 }],
    ['ecdsa', { bits: 384 }],
    ['ecdsa', { bits: 521 }],
    ['ed25519', {}],
  ];
  const keys = kinds.map(([type, opts]) => {
    if (type === 'ed25519') return ['ssh-ed25519', ed25519Blob()] as const;
    const [keyType, b64] = ssh2.utils
      .generateKeyPairSync(type as 'rsa', opts as { bits: number })
      .public.split(' ');
    return [keyType!, b64!] as const;
  });
  test.each(keys)('%s: whole is taken, cut short or with a byte more is refused', (keyType, b64) => {
    expect(parseKnownHosts(`web1 ${keyType} ${b64}`)).toEqual([expect.objectContaining({ keyType })]);
    const blob = Buffer.from(b64, 'base64');
    for (const bad of [blob.subarray(0, blob.length - 1), Buffer.concat([blob, Buffer.from([0])])])
      expect(parseKnownHosts(`web1 ${keyType} ${bad.toString('base64')}`)).toMatch(
        new RegExp(`line 1: the key data is not a whole ${keyType} key`),
      );
  });
  test('an rsa key is taken under rsa-sha2-512 and rsa-sha2-256 too', () => {
    const rsa = keys[0]![1];
    expect(parseKnownHosts(`web1 rsa-sha2-512 ${rsa}\nweb2 rsa-sha2-256 ${rsa}`)).toHaveLength(2);
  });
  test('an ecdsa key of another curve is refused', () => {
    expect(parseKnownHosts(`web1 ecdsa-sha2-nistp384 ${keys[1]![1]}`)).toMatch(
      /not a whole ecdsa-sha2-nistp384 key/,
    );
  });
});
