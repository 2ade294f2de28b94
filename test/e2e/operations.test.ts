// Day-to-day operations against real hosts: remote output decoded whole, the
// command line, status, and freezing deploys with lock and unlock.
import { parseKnownHosts, pinnedAlgorithms, verifyHostKey } from '../../src/inputs/known-hosts.js';
import { Log } from '../../src/log.js';
import { connect } from '../../src/transport/ssh.js';
import { e2eState, type E2EState } from '../support/e2e.js';

let state: E2EState;

beforeAll(() => {
  state = e2eState();
});

test('multi-byte text printed one byte at a time arrives intact, streamed and collected', async () => {
  const host = state.hosts[0]!;
  const pinned = parseKnownHosts(host.knownHosts);
  if (typeof pinned === 'string') throw new Error(pinned);
  const logged: string[] = [];
  const conn = await connect(
    { host: host.address, port: host.port, user: 'root', label: host.address },
    {
      privateKey: state.key.privateKey,
      hostKeys: {
        verify: (h, p, k) => verifyHostKey(pinned, h, p, k),
        algorithms: (h, p) => pinnedAlgorithms(pinned, h, p),
      },
      connectTimeoutMs: 20000,
      idleTimeoutMs: 60000,
      commandTimeoutMs: 600000,
    },
    new Log((l) => logged.push(l)),
  );
  try {
    // Each byte its own write, a pause between: each reaches us in its own packet.
    const text = 'é 日本 🚀\nsecond é\n';
    const r = await conn.run(
      [
        `bytes=$(printf '%s' '${text}' | od -An -v -tx1)`,
        'for b in $bytes; do printf "\\x$b"; printf "\\x$b" >&2; sleep 0.02; done',
      ].join('\n'),
      { stream: true },
    );
    expect(r.stdout).toBe(text);
    expect(r.stderr).toBe(text);
    const label = `[${host.address}] `;
    expect(logged.filter((l) => l.startsWith(label))).toEqual(
      ['é 日本 🚀', 'é 日本 🚀', 'second é', 'second é'].map((l) => label + l),
    );
  } finally {
    await conn.close();
  }
});
