// Pebble (Let's Encrypt's ACME test server, Debian package `pebble`) on the
// machine side of a test host's veth, with pebble-challtestsrv as its DNS server
// answering every name with the test host's address: certbot on the host gets a
// real certificate after a real http-01 validation of the host's port 80.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Pebble {
  directory: string;
  caBundle: string;
  stop(): Promise<void>;
}

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr}`);
}

async function waitPort(url: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const r = spawnSync('curl', ['-sk', '-o', '/dev/null', '-m', '1', url]);
    if (r.status === 0) return;
    await sleep(200);
  }
  throw new Error(`pebble did not answer at ${url}`);
}

/** Whether something accepts TCP connections on host:port (within a second). */
function answers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 1000 });
    const done = (yes: boolean) => {
      socket.destroy();
      resolve(yes);
    };
    socket.once('connect', () => done(true));
    socket.once('timeout', () => done(false));
    socket.once('error', () => done(false));
  });
}

/** Starts pebble on `listen` (the machine side of the host's veth); names resolve to `hostAddress`. */
export async function startPebble(listen: string, hostAddress: string): Promise<Pebble> {
  // A pebble that an earlier run left (killed before it could stop it) would
  // answer in this one's place, with another CA: a clear failure instead.
  for (const port of [14000, 8055])
    if (await answers(listen, port))
      throw new Error(
        `port ${port} on ${listen} is taken, likely by a pebble an earlier test run left running (killed before it stopped it): stop it (pkill -x pebble; pkill -x pebble-challtestsrv) and run again`,
      );
  if (spawnSync('sh', ['-c', 'command -v pebble && command -v pebble-challtestsrv']).status !== 0) {
    const r = spawnSync('apt-get', ['install', '-y', '-qq', 'pebble'], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error('apt-get install pebble failed');
  }
  const dir = await mkdtemp(path.join(tmpdir(), 'metalship-pebble-'));
  // A CA for pebble's own HTTPS listener (the host trusts it through acme-ca-bundle).
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '2',
      '-subj',
      '/CN=metalship test ACME CA',
    ],
    dir,
  );
  openssl(
    [
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'key.pem',
      '-out',
      'req.csr',
      '-subj',
      `/CN=${listen}`,
    ],
    dir,
  );
  await writeFile(path.join(dir, 'ext'), `subjectAltName=IP:${listen}\n`);
  openssl(
    [
      'x509',
      '-req',
      '-in',
      'req.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'cert.pem',
      '-days',
      '2',
      '-extfile',
      'ext',
    ],
    dir,
  );
  await writeFile(
    path.join(dir, 'config.json'),
    JSON.stringify({
      pebble: {
        listenAddress: `${listen}:14000`,
        managementListenAddress: `${listen}:15000`,
        certificate: path.join(dir, 'cert.pem'),
        privateKey: path.join(dir, 'key.pem'),
        httpPort: 80,
        tlsPort: 443,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
      },
    }),
  );
  const procs: ChildProcess[] = [];
  const dns = spawn(
    'pebble-challtestsrv',
    [
      '-defaultIPv4',
      hostAddress,
      '-defaultIPv6',
      '',
      '-dns01',
      `${listen}:8053`,
      '-http01',
      '',
      '-https01',
      '',
      '-tlsalpn01',
      '',
      '-management',
      `${listen}:8055`,
    ],
    { stdio: 'ignore' },
  );
  procs.push(dns);
  const pebble = spawn('pebble', ['-config', path.join(dir, 'config.json'), '-dnsserver', `${listen}:8053`], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '100' },
  });
  procs.push(pebble);
  const stop = async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitPort(`https://${listen}:14000/dir`, 15000);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    directory: `https://${listen}:14000/dir`,
    caBundle: await readFile(path.join(dir, 'ca.pem'), 'utf8'),
    stop,
  };
}
