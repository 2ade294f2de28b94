// Bad and hostile input across the actions: each is refused before any host is
// contacted, with a message naming the input, the problem and what is expected.
// (test/e2e/foundation.test.ts shows, through the real bundle, that the host is untouched.)
import type { ActionName } from '../../src/inputs/actions.js';
import { InputError, parseInputs } from '../../src/inputs/parse.js';

const KEY_B64 = 'AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl';
const PRIVATE =
  '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n';
const BASE = {
  hosts: '10.0.0.5',
  app: 'shop',
  'ssh-key': PRIVATE,
  'known-hosts': `10.0.0.5 ssh-ed25519 ${KEY_B64}`,
  'release-id': '20250101_000000',
};

// [action, the input that is wrong, its value, what the message must say]
export const BAD_INPUTS: [ActionName, string, string, RegExp][] = [
  ['deploy', 'app', 'Shop', /is not valid/],
  ['deploy', 'app', 'shop;reboot', /is not valid/],
  ['deploy', 'app', '-shop', /is not valid/],
  ['deploy', 'app', 'a'.repeat(40), /is not valid/],
  ['deploy', 'app', '', /is required/],
  ['deploy', 'hosts', '', /is required/],
  ['deploy', 'hosts', 'web1 web2', /white space/],
  ['deploy', 'hosts', '10.0.0.5, 10.0.0.5', /listed twice/],
  ['deploy', 'hosts', '10.0.0.5:0', /out of range/],
  ['deploy', 'hosts', '10.0.0.5:99999', /out of range/],
  ['deploy', 'hosts', '10.0.0.5:-1', /not a number/],
  ['deploy', 'hosts', '$(reboot)', /not a valid host name/],
  ['deploy', 'hosts', 'host`id`', /not a valid host name/],
  ['deploy', 'hosts', 'fe80::1', /brackets/],
  ['deploy', 'hosts', '[fe80::1', /unclosed/],
  ['deploy', 'hosts', 'Root@10.0.0.5', /invalid user name/],
  ['deploy', 'hosts', '10.0.0.5 roles=api,cron', /unknown role 'cron'/],
  ['deploy', 'hosts', '10.0.0.5 roles=', /roles= is empty/],
  ['switch', 'hosts', '10.0.0.5 roles=scheduler\n10.0.0.6 roles=scheduler', /exactly one scheduler/],
  ['deploy', 'ssh-user', 'root; id', /is not valid/],
  ['deploy', 'ssh-key', 'ssh-ed25519 AAAA user@laptop', /is not valid; expected a private key/],
  ['deploy', 'ssh-key', '-----BEGIN OPENSSH PRIVATE KEY-----\ntruncated', /is not valid/],
  ['deploy', 'known-hosts', '10.0.0.5 ssh-ed25519', /not a known_hosts line/],
  ['deploy', 'known-hosts', `10.0.0.5 ssh-dss ${KEY_B64}`, /unknown key type/],
  ['deploy', 'known-hosts', '10.0.0.5 ssh-ed25519 %%%%', /not base64/],
  ['deploy', 'known-hosts', `10.0.0.6 ssh-ed25519 ${KEY_B64}`, /has no key for host '10\.0\.0\.5'/],
  ['deploy', 'insecure-accept-any-host-key', 'yes', /is not a boolean; expected true or false/],
  ['deploy', 'insecure-accept-any-host-key', 'TRUE', /is not a boolean/],
  ['deploy', 'jump-host', 'bastion:22:22', /IPv6/],
  ['deploy', 'app-root', 'opt/shop', /is not absolute/],
  ['deploy', 'app-root', '/opt/../etc', /contains \. or \.\./],
  ['deploy', 'app-root', '/opt/my shop', /contains characters/],
  ['deploy', 'app-root', '/', /too close to \//],
  ['deploy', 'source', '../other-repo', /contains '\.\.'/],
  ['deploy', 'source', 'app dir', /contains characters/],
  ['deploy', 'exclude', 'tests/**\n$(id)', /odd characters/],
  ['deploy', 'release-id', '../../etc', /is not valid/],
  ['deploy', 'release-id', 'a b', /is not valid/],
  ['deploy', 'keep-releases', '1', /out of range; expected a whole number from 2 to 100/],
  ['deploy', 'keep-releases', '-5', /out of range/],
  ['deploy', 'keep-releases', '99999999999999999999', /out of range/],
  ['deploy', 'keep-releases', '3.5', /not a whole number/],
  ['deploy', 'requirements', '/etc/passwd', /is absolute/],
  ['deploy', 'shared-paths', 'logs, ../../root', /contains '\.\.'/],
  ['deploy', 'python', 'python3; rm -rf /', /is not valid/],
  ['deploy', 'pip-args', '--index-url=http://x `id`', /contains characters/],
  ['deploy', 'app-user', 'root', /expected an unprivileged user/],
  ['deploy', 'app-module', 'main:app; import os', /is not valid/],
  ['deploy', 'uvicorn-args', '--workers 2 && reboot', /contains characters/],
  ['deploy', 'worker-command', 'python -m worker | tee /tmp/x', /contains characters/],
  ['deploy', 'scheduler-command', "sh -c 'x'", /contains characters/],
  ['deploy', 'health-path', 'health', /is not valid; expected a path beginning with \//],
  ['deploy', 'health-path', '/health ready', /is not valid/],
  ['deploy', 'ready-timeout', '0', /out of range/],
  ['deploy', 'server-name', 'example.com;', /is not valid/],
  ['deploy', 'url', 'javascript:alert(1)', /is not http/],
  ['deploy', 'url', 'not a url', /is not a URL/],
  ['deploy', 'expect-status', '999', /out of range/],
  ['deploy', 'verify-timeout', '1e3', /not a whole number/],
  ['deploy', 'lock-timeout', '-1', /out of range/],
  ['deploy', 'command-idle-timeout', '2', /out of range/],
  ['deploy', 'migrate', 'on', /is not a boolean/],
  ['migrate', 'command', 'alembic upgrade head; drop database', /contains characters/],
  ['migrate', 'backup-keep', '0', /out of range/],
  ['rollback', 'migrate-down', 'sure', /is not a boolean/],
  ['rollback', 'release-id', '$(id)', /is not valid/],
];

test.each(BAD_INPUTS)('%s: %s = %j is refused', (action, input, value, message) => {
  let problems: string[] = [];
  try {
    parseInputs(action, (name) => (name === input ? value : ((BASE as Record<string, string>)[name] ?? '')));
  } catch (err) {
    expect(err).toBeInstanceOf(InputError);
    problems = (err as InputError).problems;
  }
  const mine = problems.filter((p) => p.startsWith(`Input '${input}'`));
  expect(mine.length).toBeGreaterThan(0);
  expect(mine.join('\n')).toMatch(message);
  // Every message says what is expected.
  for (const p of mine) expect(p).toMatch(/expected /);
});

test('the suite covers at least 40 cases over several actions', () => {
  expect(BAD_INPUTS.length).toBeGreaterThanOrEqual(40);
  expect(new Set(BAD_INPUTS.map(([a]) => a)).size).toBeGreaterThanOrEqual(4);
});
