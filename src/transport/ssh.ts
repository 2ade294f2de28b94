// The only module that talks SSH. One connection per host per run; every script
// goes on stdin to bash with errexit, nounset and pipefail, and its exit code decides.

import { NodeSSH, type Config } from 'node-ssh';
import { randomBytes } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { PassThrough, Readable, type Writable } from 'node:stream';
import type { Log } from '../log.js';
import { killSessionScript, remoteCommand, remoteScript } from '../remote/session.js';
import type { Step } from '../remote/step.js';
import { errorMessage } from '../errors.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { Lines, StreamText } from './text.js';

export interface Endpoint {
  host: string;
  port: number;
  user: string;
  label: string;
}

export interface ConnectOptions {
  privateKey: string;
  passphrase?: string;
  /** null: accept any host key (insecure-accept-any-host-key). */
  /** How the hosts' keys are checked (the pinned known_hosts); null: any key (insecure-accept-any-host-key). */
  hostKeys: HostKeyPolicy | null;
  jump?: Endpoint | null;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  commandTimeoutMs: number;
  /** Connection attempts before giving up (commands are never retried). */
  attempts?: number;
}

export type HostKeyVerdict = { ok: true } | { ok: false; reason: string };

/** The transport asks; the caller's pinned keys answer. */
export interface HostKeyPolicy {
  verify(host: string, port: number, key: Buffer): HostKeyVerdict;
  /** The host key algorithms to offer, so the server picks a pinned type. */
  algorithms(host: string, port: number): string[];
}

export interface RunOptions {
  /** Bytes that follow the script on stdin, for the script's last command to read. */
  input?: Buffer | Readable;
  /** Streams output live into the log, prefixed with the host. */
  stream?: boolean;
  /** With stream: called with each `MARK <what>` the script prints, as it prints it. */
  onMark?: (what: string) => void;
  idleTimeoutMs?: number;
  timeoutMs?: number;
  /** What the step is, for error messages. */
  what?: string;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class RemoteError extends Error {
  constructor(
    message: string,
    readonly host: string,
    readonly code: number | null,
    readonly stderrTail: string,
    /** What the script printed on stdout before it failed (redacted): how far it got. */
    readonly stdout = '',
  ) {
    super(message);
    this.name = 'RemoteError';
  }
}

export class HostKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HostKeyError';
  }
}

function tail(text: string, lines = 20): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

export class Connection {
  private closed = false;
  /** Starts the token of every script this connection runs, so that what the run left behind can be found. */
  private readonly runTag = randomBytes(6).toString('hex');
  private lostReason: string | null = null;

  constructor(
    readonly endpoint: Endpoint,
    private readonly ssh: NodeSSH,
    private readonly jump: NodeSSH | null,
    private readonly options: ConnectOptions,
    private readonly log: Log,
  ) {
    ssh.connection?.on('error', (err: Error) => {
      this.lostReason = err.message;
    });
    ssh.connection?.on('close', () => {
      if (!this.closed) this.lostReason ??= 'connection closed';
    });
  }

  get label(): string {
    return this.endpoint.label;
  }

  /** How long a script may print nothing (the command-idle-timeout input), unless a step says otherwise. */
  get idleTimeoutMs(): number {
    return this.options.idleTimeoutMs;
  }

  /** How long a script may run (the command-timeout input), unless a step says otherwise. */
  get commandTimeoutMs(): number {
    return this.options.commandTimeoutMs;
  }

  /** Runs a step and reads its output; throws RemoteError when its script fails. */
  async step<T>(s: Step<T>, opts: Omit<RunOptions, 'what'> = {}): Promise<T> {
    return this.readStep(s, await this.exec(s.script, { ...opts, what: s.what }));
  }

  /**
   * A step's result from how its script ended, as step() reads it: for a step
   * whose script ran inside another (the first step under the deploy lock).
   */
  readStep<T>(s: Step<T>, result: RunResult): T {
    if (!s.reportsFailure && result.code !== 0) throw this.failure(s.what, result);
    return s.parse(result.stdout, result);
  }

  /** Runs a script; resolves with its output when it exits 0, throws RemoteError otherwise. */
  async run(script: string, opts: RunOptions = {}): Promise<RunResult> {
    const result = await this.exec(script, opts);
    if (result.code !== 0) throw this.failure(opts.what ?? 'remote command', result);
    return result;
  }

  private failure(what: string, result: RunResult): RemoteError {
    return new RemoteError(
      this.log.redact(
        `${what} failed on ${this.label} with exit code ${result.code}` +
          (result.stderr.trim() ? `:\n${tail(result.stderr)}` : ''),
      ),
      this.label,
      result.code,
      this.log.redact(tail(result.stderr)),
      this.log.redact(result.stdout),
    );
  }

  /** Runs a script and resolves with its exit code whatever it is (timeouts and lost connections still throw). */
  async exec(script: string, opts: RunOptions = {}): Promise<RunResult> {
    return this.log.timed({ kind: 'remote', what: opts.what ?? 'remote command', host: this.label }, () =>
      this.execOnce(script, opts),
    );
  }

  private async execOnce(script: string, opts: RunOptions): Promise<RunResult> {
    if (this.lostReason)
      throw new RemoteError(`connection to ${this.label} was lost: ${this.lostReason}`, this.label, null, '');
    const what = opts.what ?? 'remote command';
    const idleMs = opts.idleTimeoutMs ?? this.options.idleTimeoutMs;
    const totalMs = opts.timeoutMs ?? this.options.commandTimeoutMs;
    const token = `${this.runTag}-${randomBytes(8).toString('hex')}`;
    const wrapped = remoteScript(script, token);
    const stdin = new PassThrough();
    stdin.write(wrapped);
    if (opts.input instanceof Readable) opts.input.pipe(stdin);
    else {
      if (opts.input) stdin.write(opts.input);
      stdin.end();
    }

    let channel: import('ssh2').ClientChannel | null = null;
    let timedOut: string | null = null;
    let idleTimer: NodeJS.Timeout | undefined;
    let abandon: () => void = () => {};
    const abandoned = new Promise<null>((resolve) => (abandon = () => resolve(null)));
    const stop = (reason: string) => {
      timedOut = reason;
      // Closing the channel does not stop the remote processes: kill the script's session.
      void this.ssh
        .execCommand(remoteCommand(this.endpoint.user), { stdin: remoteScript(killSessionScript(token)) })
        .catch(() => undefined)
        .finally(() => {
          channel?.close();
          setTimeout(abandon, 3000);
        });
    };
    const armIdle = () => {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(
        () => stop(`printed nothing for ${Math.round(idleMs / 1000)} s (idle timeout)`),
        idleMs,
      );
    };
    const totalTimer = setTimeout(
      () => stop(`ran longer than ${Math.round(totalMs / 1000)} s (command timeout)`),
      totalMs,
    );
    armIdle();

    // Decoded here, not by node-ssh (which decodes each chunk on its own and
    // garbles a character split between two chunks).
    const text = { out: new StreamText(), err: new StreamText() };
    const lines = { out: new Lines(), err: new Lines() };
    const emit = (kind: 'out' | 'err', chunk: Buffer) => {
      armIdle();
      const added = text[kind].push(chunk);
      if (!opts.stream) return;
      for (const line of lines[kind].push(added)) {
        // A streamed script's `MARK <what>` is a point in the run's timeline, as it happens.
        if (kind === 'out' && line.startsWith('MARK ')) {
          this.log.mark(line.slice(5), this.label);
          opts.onMark?.(line.slice(5));
        }
        this.log.info(`[${this.label}] ${line}`);
      }
    };

    try {
      const execution = this.ssh.execCommand(remoteCommand(this.endpoint.user), {
        stdin,
        noTrim: true,
        onChannel: (c) => {
          channel = c;
        },
        onStdout: (c) => emit('out', c),
        onStderr: (c) => emit('err', c),
      });
      const res = (await Promise.race([execution, abandoned])) ?? {
        code: null,
        signal: null,
        stdout: '',
        stderr: '',
      };
      for (const kind of ['out', 'err'] as const) {
        const rest = lines[kind].push(text[kind].end()).concat(lines[kind].rest()).filter(Boolean);
        if (opts.stream) for (const line of rest) this.log.info(`[${this.label}] ${line}`);
      }
      const stdout = text.out.text;
      const stderr = text.err.text;
      if (timedOut) {
        throw new RemoteError(
          this.log.redact(
            `${what} on ${this.label} ${timedOut}; its processes were stopped` +
              (stderr.trim() ? `; last output:\n${tail(stderr)}` : ''),
          ),
          this.label,
          null,
          this.log.redact(tail(stderr)),
          this.log.redact(stdout),
        );
      }
      if (res.code === null) {
        throw new RemoteError(
          this.log.redact(
            `${what} on ${this.label} ended without an exit code (${this.lostReason ?? (res.signal ? 'signal ' + res.signal : 'connection lost')})`,
          ),
          this.label,
          null,
          this.log.redact(tail(stderr)),
          this.log.redact(stdout),
        );
      }
      return { code: res.code, stdout, stderr };
    } finally {
      clearTimeout(idleTimer);
      clearTimeout(totalTimer);
    }
  }

  /**
   * Runs a script whose stdout is data, not text: its bytes are piped into sink
   * (with backpressure, never held in memory), and sink is ended when the script
   * ends. For copying a file between hosts through the runner. Resolves with the
   * exit code and stderr; `signal` aborts it (the channel is closed).
   */
  async pipeOut(
    script: string,
    sink: Writable,
    opts: { what?: string; timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<RunResult> {
    const client = this.ssh.connection;
    const what = opts.what ?? 'remote command';
    if (!client || this.lostReason)
      throw new RemoteError(`connection to ${this.label} was lost: ${this.lostReason}`, this.label, null, '');
    return new Promise<RunResult>((resolve, reject) => {
      client.exec(remoteCommand(this.endpoint.user), (err, channel) => {
        if (err) {
          sink.end();
          reject(
            new RemoteError(`${what} could not start on ${this.label}: ${err.message}`, this.label, null, ''),
          );
          return;
        }
        const stderr = new StreamText(20000);
        let code: number | null = null;
        const close = () => channel.close();
        const timer = setTimeout(close, opts.timeoutMs ?? this.options.commandTimeoutMs);
        opts.signal?.addEventListener('abort', close, { once: true });
        channel.stderr.on('data', (c: Buffer) => stderr.push(c));
        channel.on('exit', (c: number | null) => (code = c));
        channel.pipe(sink);
        channel.on('close', () => {
          clearTimeout(timer);
          opts.signal?.removeEventListener('abort', close);
          if (!sink.writableEnded) sink.end();
          stderr.end();
          resolve({ code: code ?? -1, stdout: '', stderr: this.log.redact(stderr.text) });
        });
        channel.end(remoteScript(script));
      });
    });
  }

  /**
   * Starts a long-running script whose stdin stays open: it can wait for lines
   * from us (a heartbeat) and notices when we end it or the connection drops.
   */
  openSession(
    script: string,
    onStdout: (text: string) => void,
  ): { stdin: PassThrough; done: Promise<RunResult> } {
    const stdin = new PassThrough();
    stdin.write(remoteScript(script));
    const out = new StreamText();
    const err = new StreamText();
    const done = this.ssh
      .execCommand(remoteCommand(this.endpoint.user), {
        stdin,
        noTrim: true,
        onStdout: (c) => {
          const t = out.push(c);
          if (t) onStdout(t);
        },
        onStderr: (c) => err.push(c),
      })
      .then((r) => {
        const t = out.end();
        if (t) onStdout(t);
        err.end();
        return { code: r.code ?? -1, stdout: out.text, stderr: err.text };
      });
    return { stdin, done };
  }

  /**
   * A script that stops whatever this connection's scripts still run on the
   * host: run by the lock holder when the run is gone (killed, or its network
   * lost), before it lets the lock go, so the next run never works beside them.
   */
  leftoversScript(): string {
    return killSessionScript(`${this.runTag}-*`);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.ssh.dispose();
    this.jump?.dispose();
  }
}

function hostVerifier(
  policy: HostKeyPolicy | null,
  target: Endpoint,
  log: Log,
  onReject: (reason: string) => void,
) {
  return (key: Buffer): boolean => {
    if (policy === null) return true;
    const verdict = policy.verify(target.host, target.port, key);
    if (!verdict.ok) {
      onReject(verdict.reason);
      log.error(`Refusing ${target.label}: ${verdict.reason}`);
    }
    return verdict.ok;
  };
}

async function connectOnce(
  target: Endpoint,
  options: ConnectOptions,
  log: Log,
  sock?: import('node:stream').Duplex,
): Promise<NodeSSH> {
  let rejection: string | null = null;
  const algorithms = options.hostKeys ? options.hostKeys.algorithms(target.host, target.port) : [];
  // Our own TCP socket with Nagle off: ssh2 leaves it on, and every small
  // packet of a command's exchange would then wait out the peer's delayed ACK.
  const socket = sock ?? (await tcpConnect(target.host, target.port, options.connectTimeoutMs));
  const config: Config = {
    host: target.host,
    port: target.port,
    username: target.user,
    privateKey: options.privateKey,
    passphrase: options.passphrase || undefined,
    readyTimeout: options.connectTimeoutMs,
    keepaliveInterval: 10000,
    keepaliveCountMax: 3,
    hostVerifier: hostVerifier(options.hostKeys, target, log, (r) => (rejection = r)),
    ...(algorithms.length ? { algorithms: { serverHostKey: algorithms as never } } : {}),
    sock: socket,
  };
  const ssh = new NodeSSH();
  try {
    await ssh.connect(config);
  } catch (err) {
    ssh.dispose();
    if (rejection) throw new HostKeyError(`host key verification failed for ${target.label}: ${rejection}`);
    throw err;
  }
  return ssh;
}

function tcpConnect(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`timed out connecting to ${host}:${port} after ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Connects with bounded retries for network errors; a host key mismatch is never retried. */
export async function connect(target: Endpoint, options: ConnectOptions, log: Log): Promise<Connection> {
  return log.timed({ kind: 'remote', what: 'connecting', host: target.label }, () =>
    connectWithRetries(target, options, log),
  );
}

async function connectWithRetries(target: Endpoint, options: ConnectOptions, log: Log): Promise<Connection> {
  if (options.hostKeys === null) {
    log.warn(
      `Host key checking is off for ${target.label} (insecure-accept-any-host-key): anyone in between could impersonate it.`,
    );
  }
  const attempts = options.attempts ?? 3;
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    let jump: NodeSSH | null = null;
    try {
      let sock: import('node:stream').Duplex | undefined;
      if (options.jump) {
        jump = await connectOnce(options.jump, options, log);
        sock = await new Promise((resolve, reject) =>
          jump!.connection!.forwardOut('127.0.0.1', 0, target.host, target.port, (err, stream) =>
            err ? reject(err) : resolve(stream),
          ),
        );
      }
      const ssh = await connectOnce(target, options, log, sock);
      return new Connection(target, ssh, jump, options, log);
    } catch (err) {
      jump?.dispose();
      lastError = err;
      if (err instanceof HostKeyError) throw err;
      const message = errorMessage(err);
      if (/authentication methods failed|passphrase|Cannot parse privateKey|Unsupported key/i.test(message))
        break;
      if (attempt < attempts) {
        log.info(`[${target.label}] connect attempt ${attempt} failed (${message}); retrying`);
        await sleep(1000 * attempt);
      }
    }
  }
  const message = errorMessage(lastError);
  throw new RemoteError(`could not connect to ${target.label}: ${message}`, target.label, null, '');
}
