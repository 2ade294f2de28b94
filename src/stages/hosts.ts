// Opening hosts: one connection per host for the whole run, the deploy lock held
// on each for as long as the run needs it, and per-host results.

import { isAppHost, type HostSpec } from '../inputs/hosts.js';
import type { Log } from '../log.js';
import { layout, type Layout } from '../remote/layout.js';
import { firstEnding, LOCK_EXIT_HELD, lockEvent, lockScript, type LockHolder } from '../remote/lock.js';
import type { Step } from '../remote/step.js';
import { keyLines } from '../remote/sh.js';
import { connect, type Connection, type ConnectOptions, type HostKeyPolicy } from '../transport/ssh.js';
import { pinnedAlgorithms, verifyHostKey, type KnownHostEntry } from '../inputs/known-hosts.js';
import { errorMessage } from '../errors.js';
import { freezeGate, freezeGated } from './operations.js';
import { freezeCheckStep, type Freeze } from '../remote/freeze.js';

export interface ConnectionSettings {
  hosts: HostSpec[];
  'ssh-user': string;
  'ssh-key': string;
  'ssh-key-passphrase': string;
  'known-hosts': KnownHostEntry[] | null;
  'insecure-accept-any-host-key': boolean;
  'jump-host': { host: string; port: number; user?: string; label: string } | string | null;
  app: string;
  'app-root': string;
  'connect-timeout': number;
  'command-idle-timeout': number;
  'command-timeout': number;
  'lock-timeout': number;
}

export interface Host {
  spec: HostSpec;
  conn: Connection;
  layout: Layout;
  roles: {
    api: boolean;
    worker: boolean;
    scheduler: boolean;
    migrate: boolean;
    lb: boolean;
    db: boolean;
    redis: boolean;
    backup: boolean;
  };
  release?: () => Promise<void>;
}

export interface HostResult {
  host: string;
  ok: boolean;
  error?: string;
  [key: string]: unknown;
}

/**
 * Roles when the hosts input names none (load balancer, database and Redis
 * hosts aside): every app host runs api and worker; the first also runs the
 * single scheduler and the migrations.
 */
export function resolveRoles(hosts: HostSpec[]): Host['roles'][] {
  const explicit = hosts.some((h) => h.roles.length > 0 && isAppHost(h));
  const first = hosts.find(isAppHost);
  const none = {
    api: false,
    worker: false,
    scheduler: false,
    migrate: false,
    lb: false,
    db: false,
    redis: false,
    backup: false,
  };
  return hosts.map((h) => {
    if (!isAppHost(h))
      return {
        ...none,
        lb: h.roles.includes('lb'),
        db: h.roles.includes('db'),
        redis: h.roles.includes('redis'),
        backup: h.roles.includes('backup'),
      };
    if (!explicit) return { ...none, api: true, worker: true, scheduler: h === first, migrate: h === first };
    const roles = h.roles.length ? h.roles : ['api', 'worker'];
    return {
      ...none,
      api: roles.includes('api'),
      worker: roles.includes('worker'),
      scheduler: roles.includes('scheduler'),
      migrate: roles.includes('migrate'),
    };
  });
}

/** The pinned keys as the transport asks for them (null: accept any key). */
function hostKeyPolicy(entries: KnownHostEntry[] | null): HostKeyPolicy | null {
  return entries === null
    ? null
    : {
        verify: (host, port, key) => verifyHostKey(entries, host, port, key),
        algorithms: (host, port) => pinnedAlgorithms(entries, host, port),
      };
}

export function connectOptions(settings: ConnectionSettings): ConnectOptions {
  const jump =
    settings['jump-host'] && typeof settings['jump-host'] === 'object' ? settings['jump-host'] : null;
  return {
    privateKey: settings['ssh-key'],
    passphrase: settings['ssh-key-passphrase'] || undefined,
    hostKeys: hostKeyPolicy(settings['insecure-accept-any-host-key'] ? null : settings['known-hosts']),
    jump: jump
      ? { host: jump.host, port: jump.port, user: jump.user ?? settings['ssh-user'], label: jump.label }
      : null,
    connectTimeoutMs: settings['connect-timeout'] * 1000,
    idleTimeoutMs: settings['command-idle-timeout'] * 1000,
    commandTimeoutMs: settings['command-timeout'] * 1000,
  };
}

/** Connects to every host in parallel; if any fails, closes the others and throws. */
export async function openHosts(settings: ConnectionSettings, log: Log): Promise<Host[]> {
  const options = connectOptions(settings);
  const roles = resolveRoles(settings.hosts);
  const results = await Promise.allSettled(
    settings.hosts.map((spec) =>
      connect(
        { host: spec.host, port: spec.port, user: spec.user ?? settings['ssh-user'], label: spec.label },
        options,
        log,
      ),
    ),
  );
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length) {
    await Promise.all(results.map((r) => (r.status === 'fulfilled' ? r.value.close() : undefined)));
    throw new Error(failed.map((f) => errorMessage(f.reason)).join('\n'));
  }
  return results.map((r, i) => ({
    spec: settings.hosts[i]!,
    conn: (r as PromiseFulfilledResult<Connection>).value,
    layout: layout(settings.app, settings['app-root']),
    roles: roles[i]!,
  }));
}

export function lockHolder(action: string): LockHolder {
  const e = process.env;
  const runUrl = e.GITHUB_RUN_ID
    ? `${e.GITHUB_SERVER_URL ?? 'https://github.com'}/${e.GITHUB_REPOSITORY}/actions/runs/${e.GITHUB_RUN_ID}`
    : '';
  return {
    action,
    actor: e.GITHUB_ACTOR ?? e.USER ?? 'unknown',
    runUrl,
    startedAt: new Date().toISOString(),
  };
}

/** Another run held the lock for all of the wait. */
export class LockHeldError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LockHeldError';
  }
}

/**
 * Takes the app's deploy lock on a host, and runs `first` (a short, read-only
 * step) under it in the same round trip; the returned function releases the lock.
 */
export async function acquireLock<F = undefined>(
  host: Host,
  holder: LockHolder,
  waitSeconds: number,
  log: Log,
  first?: Step<F>,
): Promise<{ release: () => Promise<void>; first: F | undefined }> {
  let buffer = '';
  let seen = '';
  let settle: ((v: string | Error) => void) | null = null;
  const outcome = new Promise<string | Error>((resolve) => (settle = resolve));
  const script = lockScript(host.layout, holder, waitSeconds, host.conn.leftoversScript(), first?.script);
  const session = host.conn.openSession(script, (text) => {
    buffer += text;
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      seen += line + '\n';
      const event = lockEvent(line);
      // A try that waits for nothing (see withHosts) is not waiting.
      if (event?.kind === 'waiting' && waitSeconds > 0)
        log.info(
          `[${host.spec.label}] waiting for the deploy lock, held by ${event.holder || 'another run'}`,
        );
      if (event?.kind === 'stale')
        log.warn(
          `[${host.spec.label}] recovered a stale deploy lock left by a run that ended without releasing it: ${event.holder}`,
        );
      if (event?.kind === 'locked') settle?.('locked');
    }
  });
  void session.done.then((r) => {
    if (r.code === LOCK_EXIT_HELD) {
      const held = keyLines(r.stdout).get('HELD') || 'another run';
      settle?.(
        new LockHeldError(
          `${host.spec.label}: another deploy holds the lock of ${host.layout.app} and did not finish within ${waitSeconds} s: ${held}`,
        ),
      );
    } else {
      settle?.(
        new Error(
          `${host.spec.label}: could not take the deploy lock (exit ${r.code}): ${r.stderr.trim().slice(-500)}`,
        ),
      );
    }
  });
  const result = await outcome;
  if (result instanceof Error) {
    session.stdin.end();
    throw result;
  }
  // Heartbeat: the remote holder gives the lock up when these stop (run killed, network gone).
  const beat = setInterval(() => session.stdin.write('\n'), 10000);
  const release = async () => {
    clearInterval(beat);
    session.stdin.end('release\n');
    await session.done;
  };
  if (!first) return { release, first: undefined };
  try {
    const ending = firstEnding(seen);
    if (!ending)
      throw new Error(`${host.spec.label}: the deploy lock was taken, but ${first.what} printed no ending`);
    return { release, first: host.conn.readStep(first, ending) };
  } catch (err) {
    await release();
    throw err;
  }
}

/** The key hosts' locks are taken in: their address, as every run spells it the same way. */
export function lockOrder(h: Pick<Host, 'spec'>): string {
  return `${h.spec.host.toLowerCase()}:${String(h.spec.port).padStart(5, '0')}`;
}

/** Runs fn on every host in parallel and collects a result per host (one failure does not hide the others). */
export async function onEachHost<T extends Record<string, unknown>>(
  hosts: Host[],
  fn: (host: Host) => Promise<T>,
): Promise<(HostResult & Partial<T>)[]> {
  return Promise.all(
    hosts.map(async (host) => {
      try {
        return { host: host.spec.label, ok: true, ...(await fn(host)) };
      } catch (err) {
        return {
          host: host.spec.label,
          ok: false,
          error: errorMessage(err),
        } as HostResult & Partial<T>;
      }
    }),
  );
}

/**
 * Connects, locks every app host, runs fn, and always releases the locks and
 * closes the connections. Load balancers, database and Redis hosts (roles=lb,
 * db, redis) are connected to only with `balancers: true` (provision), and
 * passed apart: the deploy path never needs them.
 */
export async function withHosts<T, F = undefined>(
  settings: ConnectionSettings,
  log: Log,
  action: string,
  fn: (hosts: Host[], balancers: Host[], underLock: F[]) => Promise<T>,
  opts: {
    lock?: boolean;
    balancers?: boolean;
    /** Runs once connected, before any lock is taken (which writes to the host). */
    beforeLock?: (all: Host[]) => Promise<void>;
    /** A short, read-only step run on each host as its lock is taken, in the same round trip; fn gets the results, in host order. */
    underLock?: (host: Host) => Step<F>;
  } = {},
): Promise<T> {
  const wanted = opts.balancers ? settings.hosts : settings.hosts.filter(isAppHost);
  const all = await log.group(`Connecting to ${wanted.length} host(s)`, () =>
    openHosts({ ...settings, hosts: wanted }, log),
  );
  const hosts = all.filter((h) => isAppHost(h.spec));
  const balancers = all.filter((h) => !isAppHost(h.spec));
  const releases: (() => Promise<void>)[] = [];
  try {
    await opts.beforeLock?.(all);
    const underLock = new Map<Host, F>();
    // Without a step of the caller's, the freeze is read in the lock's round trip.
    const freezeFirst = !opts.underLock && freezeGated(action);
    const freezes = new Map<Host, Freeze | null>();
    if (opts.lock !== false) {
      const holder = lockHolder(action);
      const deadline = Date.now() + settings['lock-timeout'] * 1000;
      const take = (h: Host, wait: number, together = false) => {
        const first: Step<unknown> | undefined =
          opts.underLock?.(h) ?? (freezeFirst ? freezeCheckStep(h.layout) : undefined);
        const taking = together
          ? 'taking the deploy lock (every host at once, if none is held)'
          : 'taking the deploy lock';
        const what = first ? `${taking}, then ${first.what}` : taking;
        return log.timed({ kind: 'remote', what, host: h.spec.label }, () =>
          acquireLock(h, holder, wait, log, first),
        );
      };
      const keep = (h: Host, locked: Awaited<ReturnType<typeof take>>) => {
        releases.push(locked.release);
        if (opts.underLock) underLock.set(h, locked.first as F);
        else if (freezeFirst) freezes.set(h, locked.first as Freeze | null);
      };
      // First all at once, waiting for none: the usual case, no other run on
      // these hosts. If one is held, those taken go back, and the locks are
      // taken one at a time, in the same order for every run: two overlapping
      // runs then never each hold half of them and wait out the timeout.
      const takenTogether = async (): Promise<boolean> => {
        const tries = await Promise.allSettled(hosts.map((h) => take(h, 0, true)));
        const failed = tries.flatMap((t) => (t.status === 'rejected' ? [t.reason as unknown] : []));
        const got = tries.flatMap((t, i) =>
          t.status === 'fulfilled' ? [{ h: hosts[i]!, locked: t.value }] : [],
        );
        if (failed.length === 0) {
          for (const g of got) keep(g.h, g.locked);
          return true;
        }
        await Promise.allSettled(got.map((g) => g.locked.release()));
        const other = failed.find((e) => !(e instanceof LockHeldError));
        if (other !== undefined) throw other;
        // No time to wait: one at a time would only find it held again.
        if (settings['lock-timeout'] === 0) throw failed[0];
        return false;
      };
      if (!(hosts.length > 1 && (await takenTogether())))
        for (const h of [...hosts].sort((a, b) => lockOrder(a).localeCompare(lockOrder(b))))
          keep(h, await take(h, Math.max(0, Math.ceil((deadline - Date.now()) / 1000))));
    } else if (opts.underLock) {
      const steps = opts.underLock;
      await Promise.all(hosts.map(async (h) => underLock.set(h, await h.conn.step(steps(h)))));
    }
    // Under the lock: a freeze set from now on stops the next run, not this one.
    await freezeGate(
      hosts,
      action,
      log,
      freezes.size === hosts.length ? hosts.map((h) => freezes.get(h) ?? null) : undefined,
    );
    return await fn(
      hosts,
      balancers,
      hosts.map((h) => underLock.get(h) as F),
    );
  } finally {
    await log.timed({ kind: 'remote', what: 'releasing the deploy locks' }, () =>
      Promise.allSettled(releases.map((r) => r())),
    );
    await Promise.all(all.map((h) => h.conn.close()));
  }
}
