// Node wrapper around test/hosts/testhosts.sh: real Debian test hosts
// (systemd-nspawn containers, one network namespace each) for e2e tests, the
// demo and the benchmark. Needs root. Only node: builtins.
import { spawn } from 'node:child_process';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { constants, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage } from '../../src/errors.js';

export interface TestHost {
  name: string;
  address: string;
  port: number;
  knownHosts: string;
  /** Its address on the private LAN it was booted into (`--lan`), if any. */
  lan?: string;
}

export interface HostKeyPair {
  privateKey: string;
  privateKeyPath: string;
  publicKeyPath: string;
}

export type ImageVariant = 'full' | 'bare';

/** The Debian releases test hosts can run (testhosts.sh builds one image per release). */
export const DEBIAN_RELEASES = ['bullseye', 'bookworm', 'trixie'] as const;
export type DebianRelease = (typeof DEBIAN_RELEASES)[number];

/** The release of this run's test hosts: METALSHIP_DEBIAN, bookworm by default. */
export function debianRelease(): DebianRelease {
  const r = process.env.METALSHIP_DEBIAN || 'bookworm';
  if (!(DEBIAN_RELEASES as readonly string[]).includes(r))
    throw new Error(`METALSHIP_DEBIAN must be one of ${DEBIAN_RELEASES.join(', ')}, not '${r}'`);
  return r as DebianRelease;
}

/** Absolute path of test/hosts/testhosts.sh. */
export function testHostsScript(): string {
  return fileURLToPath(new URL('../hosts/testhosts.sh', import.meta.url));
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

const STDERR_TAIL = 8000;

/** Set METALSHIP_HOSTS_VERBOSE=1 to see the script's progress (image builds take minutes). */
function verbose(): boolean {
  const v = process.env.METALSHIP_HOSTS_VERBOSE;
  return v !== undefined && v !== '' && v !== '0';
}

function run(
  command: string,
  args: string[],
  opts: { input?: string; idleMs?: number; echoStderr?: boolean; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult & { timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: opts.env,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    // An idle limit, not a wall-clock one: a busy machine makes a command slow,
    // not silent, so only a command that stopped printing is killed.
    const arm = () => {
      if (opts.idleMs === undefined) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, opts.idleMs);
    };
    arm();
    child.stdout?.on('data', (b: Buffer) => {
      out.push(b);
      arm();
    });
    child.stderr?.on('data', (b: Buffer) => {
      err.push(b);
      arm();
      if (opts.echoStderr) process.stderr.write(b);
    });
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({
        code: code ?? (signal ? 128 + signalNumber(signal) : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      });
    });
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => {
        /* remote side closed early: its exit code tells the story */
      });
      child.stdin.end(opts.input);
    }
  });
}

function signalNumber(signal: NodeJS.Signals): number {
  return constants.signals[signal] ?? 0;
}

async function script(args: string[], idleMs?: number, release?: DebianRelease): Promise<string> {
  const r = await run('bash', [testHostsScript(), ...args], {
    idleMs,
    echoStderr: verbose(),
    env: release ? { ...process.env, METALSHIP_DEBIAN: release } : undefined,
  });
  if (r.code !== 0 || r.timedOut) {
    const tail = r.stderr.length > STDERR_TAIL ? '…' + r.stderr.slice(-STDERR_TAIL) : r.stderr;
    const why = r.timedOut ? `printed nothing for ${idleMs} ms` : `exited with ${r.code}`;
    throw new Error(`testhosts.sh ${args.join(' ')} ${why}:\n${tail.trimEnd()}`);
  }
  return r.stdout;
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** An ed25519 key pair without passphrase in `dir` (made with ssh-keygen if absent). */
export async function ensureKey(dir: string): Promise<HostKeyPair> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const privateKeyPath = path.resolve(dir, 'id_ed25519');
  const publicKeyPath = `${privateKeyPath}.pub`;
  if (!(await exists(privateKeyPath)) || !(await exists(publicKeyPath))) {
    await rm(privateKeyPath, { force: true });
    await rm(publicKeyPath, { force: true });
    const r = await run('ssh-keygen', [
      '-q',
      '-t',
      'ed25519',
      '-N',
      '',
      '-C',
      'metalship-test',
      '-f',
      privateKeyPath,
    ]);
    if (r.code !== 0) throw new Error(`ssh-keygen failed (${r.code}): ${r.stderr.trim()}`);
  }
  return { privateKey: await readFile(privateKeyPath, 'utf8'), privateKeyPath, publicKeyPath };
}

/** Build (or reuse from cache) the release's image; returns its rootfs path. */
export async function buildImage(
  variant: ImageVariant = 'full',
  release: DebianRelease = debianRelease(),
): Promise<string> {
  const out = await script(['image', variant], undefined, release);
  const rootfs = out.trim().split('\n').pop();
  if (!rootfs) throw new Error(`testhosts.sh image ${variant} (${release}) printed no path`);
  return rootfs;
}

function parseHost(out: string, name: string): TestHost {
  const line = out
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .pop();
  if (!line) throw new Error(`testhosts.sh up ${name} printed no host description`);
  const h = JSON.parse(line) as TestHost;
  if (!h.lan) delete h.lan;
  if (!h.address || !h.knownHosts || typeof h.port !== 'number') {
    throw new Error(`testhosts.sh up ${name} printed an incomplete host description: ${line}`);
  }
  return h;
}

/**
 * Boot hosts in parallel (the image is built or checked once first). If any host
 * fails to come up, the others are shut down again and the error is thrown.
 */
export async function bootHosts(
  /** lan: `TAG:ADDR`, joins the private LAN TAG (shared by the hosts given the same TAG) as ADDR. */
  specs: { name: string; index: number; lan?: string }[],
  key: HostKeyPair,
  opts: { variant?: ImageVariant; bindRo?: string[]; release?: DebianRelease } = {},
): Promise<TestHost[]> {
  const variant = opts.variant ?? 'full';
  const release = opts.release ?? debianRelease();
  await buildImage(variant, release);
  const extra = (opts.bindRo ?? []).flatMap((b) => ['--bind-ro', b]);
  const results = await Promise.allSettled(
    specs.map(async (spec) =>
      parseHost(
        await script(
          [
            'up',
            spec.name,
            String(spec.index),
            variant,
            '--pubkey',
            key.publicKeyPath,
            ...extra,
            ...(spec.lan ? ['--lan', spec.lan] : []),
          ],
          undefined,
          release,
        ),
        spec.name,
      ),
    ),
  );
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length > 0) {
    // shut down only what this call booted: a failure may be "already up"
    const booted = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.name] : []));
    await shutdownHosts(booted).catch(() => undefined);
    const reasons = failed.map((f) => errorMessage(f.reason));
    throw new Error(`booting test hosts failed:\n${reasons.join('\n\n')}`);
  }
  return results.map((r) => (r as PromiseFulfilledResult<TestHost>).value);
}

/** Power off and remove the named hosts (idempotent). */
export async function shutdownHosts(names: string[]): Promise<void> {
  const results = await Promise.allSettled(names.map((n) => script(['down', n])));
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length > 0) {
    throw new Error(failed.map((f) => errorMessage(f.reason)).join('\n'));
  }
}

/** Remove every host left under /var/lib/metalship/hosts (also those of killed runs). */
export async function cleanupAll(): Promise<void> {
  await script(['down-all']);
}

/**
 * Run `command` as root on the host with the system ssh client, strict host key
 * checking against host.knownHosts. Never throws on a non-zero exit; a command
 * silent for idleMs is killed and yields code 124.
 */
export async function sshRun(
  host: TestHost,
  key: HostKeyPair,
  command: string,
  opts: { input?: string; idleMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'metalship-kh-'));
  try {
    const knownHostsPath = path.join(dir, 'known_hosts');
    // known_hosts names a host on a port other than 22 as [address]:port
    const knownHosts =
      host.port === 22
        ? host.knownHosts
        : host.knownHosts.replace(/^(\S+)(?=\s)/gm, (h) => (h.startsWith('[') ? h : `[${h}]:${host.port}`));
    await writeFile(knownHostsPath, knownHosts.trimEnd() + '\n', { mode: 0o600 });
    const args = [
      '-F',
      '/dev/null',
      '-i',
      key.privateKeyPath,
      '-p',
      String(host.port),
      '-o',
      'BatchMode=yes',
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      `UserKnownHostsFile=${knownHostsPath}`,
      '-o',
      'GlobalKnownHostsFile=/dev/null',
      '-o',
      'ConnectTimeout=5',
      '-o',
      'LogLevel=ERROR',
      `root@${host.address}`,
      command,
    ];
    const r = await run('ssh', args, { input: opts.input, idleMs: opts.idleMs });
    if (r.timedOut) {
      return {
        code: 124,
        stdout: r.stdout,
        stderr: `${r.stderr}ssh: the command printed nothing for ${opts.idleMs} ms (idle limit)\n`,
      };
    }
    return { code: r.code, stdout: r.stdout, stderr: r.stderr };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
