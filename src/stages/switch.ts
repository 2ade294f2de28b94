// The switch, verify and rollback stages over a set of hosts.

import type { Log } from '../log.js';
import type { Slot } from '../remote/layout.js';
import { markStep } from '../remote/release.js';
import { readRuntimeStep, runtimePath } from '../remote/runtime.js';
import { PRECHECK_FAILED, standDownStep, switchStep, unserveStep, type Precheck } from '../remote/switch.js';
import { RemoteError } from '../transport/ssh.js';
import { keyLines } from '../remote/sh.js';
import type { Step } from '../remote/step.js';
import {
  effectiveRuntime,
  parseRuntimeRecord,
  runtimeDefaults,
  runtimeOf,
  runtimeRecord,
  RUNTIME_RECORD_MAX,
  type Runtime,
  type RuntimeOverrides,
} from '../inputs/runtime.js';
import { unitFiles } from '../remote/units.js';
import {
  API_VERIFIED,
  cleanupStep,
  listStep,
  pickRollbackTarget,
  planCleanup,
  verifyStep,
  type HealthOutcome,
  type ReleaseListing,
  type VerifySettings as RemoteVerifySettings,
} from '../remote/verify.js';
import { onEachHost, type Host, type HostResult } from './hosts.js';
import { errorMessage } from '../errors.js';
import { setTimeout as sleep } from 'node:timers/promises';

/** How a switch runs: its own limits, and the runtime settings it was told explicitly (the rest are the release's). */
export interface ServiceSettings extends RuntimeOverrides {
  app: string;
  'ready-timeout': number;
  'server-name': string;
  /** For a release without a record (made before releases kept one): the settings to use before the defaults. */
  unrecorded?: RuntimeOverrides;
}

export interface VerifySettings {
  'health-path': string;
  'verify-path': string;
  url: string;
  'expect-status': number;
  'expect-body': string;
  'verify-timeout': number;
  'verify-interval': number;
  'units-stable-seconds': number;
  'units-ready': 'stable' | 'notify';
  'worker-command': string[];
  'scheduler-command': string[];
}

export interface SwitchResult extends HostResult {
  previous?: string;
  slot?: Slot;
  seconds?: number;
  /** The settings the release now runs with on the host. */
  runtime?: Runtime;
  /** The checks after traffic moved (SwitchOptions.checks): why it is unhealthy, or the listing they made. */
  checked?: { error?: string; listing?: ReleaseListing };
}

/**
 * The settings a release runs with on a host: those given, else those recorded
 * with it, else (a release made before releases recorded them) the defaults.
 */
export async function runtimeOnHost(
  host: Host,
  /** null: the current release. */
  releaseId: string | null,
  overrides: RuntimeOverrides & { app: string; unrecorded?: RuntimeOverrides },
  log: Log,
  /** The record, when already read (a rollback reads it with its listing): null for none. */
  known?: string | null,
): Promise<Runtime> {
  const text =
    known !== undefined
      ? known
      : await host.conn.step(readRuntimeStep(host.layout, releaseId, RUNTIME_RECORD_MAX));
  const which = releaseId ?? 'the current release';
  let recorded: Runtime | null = null;
  if (text === null) {
    log.warn(
      `[${host.spec.label}] ${which} has no recorded settings (made before releases recorded them, or nothing is deployed): using the inputs given and the defaults`,
    );
  } else {
    try {
      recorded = parseRuntimeRecord(text);
    } catch (err) {
      throw new Error(
        `the settings recorded with ${which} on ${host.spec.label} (${releaseId === null ? `${host.layout.current}/.metalship/runtime.json` : runtimePath(host.layout, releaseId)}) are unusable: ${errorMessage(err)}; nothing was changed`,
      );
    }
  }
  const defaults = effectiveRuntime(overrides.unrecorded ?? {}, null, runtimeDefaults(overrides.app));
  return effectiveRuntime(overrides, recorded, defaults);
}

/** How a switch may go faster when its caller checks right after. */
export interface SwitchOptions {
  /** The target's runtime record, already read (null: it has none). */
  record?: string | null;
  /** The caller checks right after: the switch may leave the checking to it (see SwitchSettings.checksFollow). */
  checksFollow?: boolean;
  /** The verify checks, also made on the started slot's socket before traffic moves (see SwitchSettings.precheck). */
  precheck?: PrecheckSettings | null;
  /** See SwitchSettings.clearDrainPort. */
  clearDrainPort?: number;
  /** See SwitchSettings.startOnly. */
  startOnly?: boolean;
  /**
   * The verify checks after traffic moves, made by the switch's own script
   * (see SwitchSettings.checks), of the health path and units the release runs
   * with; list: it also lists the releases once healthy. Their verdict is the
   * result's `checked`.
   */
  checks?: { settings: VerifyChecks; list?: boolean };
  /** With checks: called once they found the api answering (through its socket and nginx), before the units' verdict. */
  onApiVerified?: () => void;
  /** See SwitchSettings.followersAfterApi. */
  followersAfterApi?: boolean;
}

/** The verify settings that are not the release's own (those come from its runtime). */
export type VerifyChecks = Omit<VerifySettings, ReleaseChecks>;
type ReleaseChecks = 'health-path' | 'worker-command' | 'scheduler-command' | 'units-ready';

/** The health path and units a release's checks look at: those it runs with. */
function releaseChecks(rt: Runtime): Pick<VerifySettings, ReleaseChecks> {
  return {
    'health-path': rt['health-path'],
    'worker-command': rt['worker-command'],
    'scheduler-command': rt['scheduler-command'],
    'units-ready': rt['units-ready'],
  };
}

type PrecheckSettings = Pick<
  VerifySettings,
  'verify-path' | 'url' | 'expect-status' | 'expect-body' | 'verify-timeout' | 'verify-interval'
>;

/** A release that failed the verify checks on its own slot's socket: it never took traffic on that host. */
export class PrecheckFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PrecheckFailure';
  }
}

/**
 * A switch that failed after traffic moved (or current, on a host without the
 * api): its checks ran past the time limit, the connection was lost, a later
 * line failed. The host did switch: it is switched back like one whose checks
 * failed.
 */
export class SwitchedThenFailed extends Error {
  constructor(
    message: string,
    /** The release current pointed at before ('' on a first deploy). */
    readonly previous: string,
  ) {
    super(message);
    this.name = 'SwitchedThenFailed';
  }
}

/** The verify checks a host's switch makes before the rename: null when its readiness wait already is that check. */
function precheckOf(s: PrecheckSettings, runtime: Runtime): Precheck | null {
  const p: Precheck = {
    path: s['verify-path'] || runtime['health-path'],
    expectStatus: s['expect-status'],
    // As verifyHost: with a url, the body is checked there only.
    expectBody: s.url ? '' : s['expect-body'],
    timeout: s['verify-timeout'],
    interval: s['verify-interval'],
  };
  const sameAsReadiness = p.path === runtime['health-path'] && p.expectStatus === 200 && p.expectBody === '';
  return sameAsReadiness ? null : p;
}

/** The answer a failed precheck printed (PRECHECK {json} on stderr), as verifyHost words an unhealthy one. */
function precheckMessage(host: Host, p: Precheck, err: RemoteError): string {
  const line = err.stderrTail.split('\n').find((l) => l.startsWith('PRECHECK '));
  let answer = 'nothing it could read';
  try {
    const a = JSON.parse(line?.slice('PRECHECK '.length) ?? '') as {
      status: number;
      attempts: number;
      body: string;
    };
    answer = `${a.status || 'nothing'} after ${a.attempts} attempts: ${a.body.slice(0, 300)}`;
  } catch {
    // the message says so
  }
  const expected = `${p.expectStatus}${p.expectBody ? ` containing '${p.expectBody}'` : ''}`;
  return `${host.spec.label} is unhealthy: ${p.path} answered ${answer} (expected ${expected}; checked on the new release's own slot socket before it took any traffic, so the serving release kept serving)`;
}

export async function switchHost(
  host: Host,
  releaseId: string,
  settings: ServiceSettings,
  log: Log,
  opts: SwitchOptions = {},
): Promise<SwitchResult> {
  const started = Date.now();
  const runtime = await runtimeOnHost(host, releaseId, settings, log, opts.record);
  const units = unitFiles(
    {
      layout: host.layout,
      user: runtime['app-user'],
      appModule: runtime['app-module'],
      uvicornArgs: runtime['uvicorn-args'],
      workerCommand: runtime['worker-command'],
      schedulerCommand: runtime['scheduler-command'],
      unitsReady: runtime['units-ready'],
    },
    { worker: host.roles.worker, scheduler: host.roles.scheduler },
  );
  const precheck = opts.precheck && host.roles.api ? precheckOf(opts.precheck, runtime) : null;
  const checks =
    opts.checks && !opts.startOnly
      ? checksOf(
          host,
          { ...opts.checks.settings, ...releaseChecks(runtime) },
          { list: opts.checks.list, restarted: true, release: releaseId },
        )
      : null;
  const checksSeconds = checks ? checks.timeout + checks.stableSeconds : 0;
  const switching = host.conn.step(
    switchStep({
      layout: host.layout,
      releaseId,
      units,
      healthPath: runtime['health-path'],
      readyTimeout: settings['ready-timeout'],
      serverName: settings['server-name'],
      worker: host.roles.worker && runtime['worker-command'].length > 0,
      scheduler: host.roles.scheduler && runtime['scheduler-command'].length > 0,
      api: host.roles.api,
      record: runtimeRecord(runtime),
      notify: runtime['units-ready'] === 'notify',
      checksFollow: opts.checksFollow,
      precheck,
      clearDrainPort: opts.clearDrainPort,
      startOnly: opts.startOnly,
      checks,
      followersAfterApi: opts.followersAfterApi,
    }),
    // Its waits print nothing until they end: the idle limit leaves room for both.
    {
      stream: true,
      onMark: (what) => {
        if (what === API_VERIFIED) opts.onApiVerified?.();
      },
      idleTimeoutMs: Math.max(
        host.conn.idleTimeoutMs,
        (settings['ready-timeout'] + (precheck?.timeout ?? 0) + checksSeconds + 60) * 1000,
      ),
      // The checks have the time they had as a step of their own, on top of the switch's.
      ...(checks ? { timeoutMs: host.conn.commandTimeoutMs + (checksSeconds + 60) * 1000 } : {}),
    },
  );
  const { slot, previous, health } = await switching.catch((err: unknown) => {
    if (precheck && err instanceof RemoteError && err.code === PRECHECK_FAILED)
      throw new PrecheckFailure(precheckMessage(host, precheck, err));
    // The script says when traffic (or current) moved: PREVIOUS, right after.
    const moved = err instanceof RemoteError ? keyLines(err.stdout).get('PREVIOUS') : undefined;
    if (moved !== undefined)
      throw new SwitchedThenFailed(
        `${errorMessage(err)} (after traffic moved to ${releaseId})`,
        moved.trim(),
      );
    throw err;
  });
  log.info(
    opts.startOnly
      ? `[${host.spec.label}] ${releaseId} is up in the ${slot} slot, ready to take traffic`
      : slot
        ? `[${host.spec.label}] ${releaseId} serves from the ${slot} slot (was ${previous || 'nothing'})`
        : `[${host.spec.label}] ${releaseId} is current, no api on this host (was ${previous || 'nothing'})`,
  );
  let checked: SwitchResult['checked'];
  if (checks && health) {
    try {
      const { listing } = judgeHealth(host, checks.path, health, log);
      checked = listing ? { listing } : {};
    } catch (err) {
      checked = { error: errorMessage(err) };
    }
  }
  return {
    host: host.spec.label,
    ok: true,
    previous,
    slot: slot ?? undefined,
    seconds: (Date.now() - started) / 1000,
    runtime,
    ...(checked ? { checked } : {}),
  };
}

/**
 * Switches the hosts that did switch back to the release each had before, run
 * as it ran then (its recorded settings: what this switch was told is the new
 * release's). A host that served nothing before stops serving the release.
 */
export async function revertHosts(
  hosts: Host[],
  switched: { host: string; previous?: string }[],
  settings: ServiceSettings,
  log: Log,
): Promise<string[]> {
  const reverted: string[] = [];
  const limits: ServiceSettings = {
    app: settings.app,
    'ready-timeout': settings['ready-timeout'],
    'server-name': settings['server-name'],
    // A previous release made before releases kept a record ran with the settings of this run, as before.
    unrecorded: runtimeOf(settings),
  };
  for (const r of switched) {
    const host = hosts.find((h) => h.spec.label === r.host)!;
    const back = r.previous
      ? `Revert ${host.spec.label} to ${r.previous}`
      : `Stop serving on ${host.spec.label}`;
    try {
      await log.group(back, async () => {
        if (r.previous) await switchHost(host, r.previous, limits, log);
        else {
          await host.conn.step(unserveStep(host.layout));
          log.info(`[${host.spec.label}] served nothing before: nothing serves there now`);
        }
      });
      reverted.push(r.host);
    } catch (err) {
      log.error(`could not ${back.toLowerCase()}: ${errorMessage(err)}`);
    }
  }
  return reverted;
}

export interface VerifyResult extends HostResult {
  healthy?: boolean;
  attempts?: number;
  seconds?: number;
  status?: number;
  body?: string;
}

/** What checking the url input needs. */
type UrlChecks = Pick<
  VerifySettings,
  'url' | 'expect-status' | 'expect-body' | 'verify-timeout' | 'verify-interval'
>;

async function verifyUrl(
  settings: UrlChecks,
): Promise<{ ok: boolean; attempts: number; seconds: number; status: number; body: string }> {
  const started = Date.now();
  const deadline = started + settings['verify-timeout'] * 1000;
  let attempts = 0;
  for (;;) {
    attempts++;
    let status = 0;
    let body = '';
    try {
      const res = await fetch(settings.url, { redirect: 'manual', signal: AbortSignal.timeout(5000) });
      status = res.status;
      body = (await res.text()).slice(0, 4096);
    } catch (err) {
      body = errorMessage(err);
    }
    const ok = status === settings['expect-status'] && body.includes(settings['expect-body']);
    if (ok || Date.now() >= deadline)
      return { ok, attempts, seconds: (Date.now() - started) / 1000, status, body: body.slice(0, 500) };
    await sleep(settings['verify-interval'] * 1000);
  }
}

/** The remote checks of a host, from the verify settings (the release's own health path and units among them). */
function checksOf(
  host: Host,
  settings: VerifySettings,
  /** release: the checks run in its switch, which names its worker (no unit file is read for it). */
  opts: { list?: boolean; restarted?: boolean; release?: string },
): RemoteVerifySettings {
  const worker = host.roles.worker && settings['worker-command'].length > 0;
  const scheduler = host.roles.scheduler && settings['scheduler-command'].length > 0;
  return {
    layout: host.layout,
    path: settings['verify-path'] || settings['health-path'],
    timeout: settings['verify-timeout'],
    interval: settings['verify-interval'],
    stableSeconds: settings['units-stable-seconds'],
    notify: settings['units-ready'] === 'notify',
    expectStatus: settings['expect-status'],
    expectBody: settings.url ? '' : settings['expect-body'],
    units: [
      ...(scheduler ? [host.layout.units.scheduler] : []),
      ...(worker && opts.release ? [host.layout.units.worker(opts.release)] : []),
    ],
    // Else the worker of the release current points at, as found on the host.
    worker: worker && !opts.release,
    api: host.roles.api,
    list: opts.list,
    restarted: opts.restarted,
  };
}

/** Reads what a host's checks found: logs it, and throws naming the host and why when unhealthy. */
function judgeHealth(
  host: Host,
  path: string,
  health: HealthOutcome,
  log: Log,
): { healthy: true; attempts: number; seconds: number; listing?: ReleaseListing } {
  const answer = health.answer;
  for (const note of health.unitNotes) log.info(`[${host.spec.label}] ${note}`);
  if (!health.healthy) {
    const why = [
      health.problem,
      answer && !answer.ok
        ? `${path} answered ${answer.status || 'nothing'} after ${answer.attempts} attempts: ${answer.body.slice(0, 300)}`
        : '',
      health.nginx && !health.nginx.answer.ok
        ? `${path} answered on the slot's socket, but through nginx (Host: ${health.nginx.host}) it answered ${health.nginx.answer.status || 'nothing'} after ${health.nginx.answer.attempts} attempts: ${health.nginx.answer.body.slice(0, 300)}`
        : '',
      health.unitsDown.length
        ? `units not active: ${health.unitsDown.join(' ')}${health.unitStates.map((u) => `\n  ${u}`).join('')}`
        : '',
      health.journal.length ? `recent journal:\n${health.journal.join('\n')}` : '',
    ]
      .filter(Boolean)
      .join('\n');
    throw new Error(`${host.spec.label} is unhealthy: ${why}`);
  }
  log.info(
    host.roles.api
      ? `[${host.spec.label}] healthy after ${answer?.attempts} check(s), ${answer?.seconds} s`
      : `[${host.spec.label}] units active (no api on this host)`,
  );
  return {
    healthy: true,
    attempts: answer?.attempts ?? 0,
    seconds: answer?.seconds ?? 0,
    ...(health.listing ? { listing: health.listing } : {}),
  };
}

/** Health checks on one host until healthy or timed out; throws naming the host and why. */
export async function verifyHost(
  host: Host,
  settings: VerifySettings,
  log: Log,
  /** Also list the releases once healthy (see the remote VerifySettings.list); the switch just restarted the units. */
  opts: { list?: boolean; restarted?: boolean } = {},
): Promise<{ healthy: true; attempts: number; seconds: number; listing?: ReleaseListing }> {
  const checks = checksOf(host, settings, opts);
  const health = await host.conn.step(verifyStep(checks), {
    timeoutMs: (settings['verify-timeout'] + settings['units-stable-seconds'] + 60) * 1000,
  });
  return judgeHealth(host, checks.path, health, log);
}

/** The url input checked from the runner (through whatever serves it: a load balancer, a CDN). */
export async function verifyUrlStage(settings: UrlChecks, log: Log): Promise<VerifyResult> {
  const r = await verifyUrl(settings);
  log.info(`${settings.url}: ${r.status} after ${r.attempts} attempt(s)`);
  if (!r.ok) {
    return {
      host: settings.url,
      ok: false,
      healthy: false,
      attempts: r.attempts,
      seconds: r.seconds,
      error: `${settings.url} answered ${r.status || 'nothing'} (expected ${settings['expect-status']}${settings['expect-body'] ? ` containing '${settings['expect-body']}'` : ''}): ${r.body.slice(0, 300)}`,
    };
  }
  return { host: settings.url, ok: true, healthy: true, attempts: r.attempts, seconds: r.seconds };
}

/**
 * Health checks on every host (and of the URL from the runner), until healthy or
 * timed out: of the health path and units the current release runs with, unless given.
 */
export async function verifyStage(
  hosts: Host[],
  s: Omit<VerifySettings, 'health-path' | 'worker-command' | 'scheduler-command' | 'units-ready'> &
    RuntimeOverrides & { app: string },
  log: Log,
): Promise<VerifyResult[]> {
  return log.group('Verify', async () => {
    const results: VerifyResult[] = await onEachHost(hosts, async (host) => {
      const rt = await runtimeOnHost(host, null, s, log);
      // {release} (left in by the verify action, given no release): the release this host serves.
      const body = s['expect-body'].includes('{release}')
        ? s['expect-body'].replaceAll('{release}', (await listReleases(host)).links.current ?? '')
        : s['expect-body'];
      return verifyHost(host, { ...s, ...rt, 'expect-body': body }, log);
    });
    if (s.url) results.push(await verifyUrlStage(s, log));
    return results;
  });
}

export async function listReleases(host: Host): Promise<ReleaseListing> {
  return host.conn.step(listStep(host.layout));
}

/** Removes old releases and unused virtualenvs, keeping `keep` good ones plus current and the standby. */
export async function cleanupStage(
  hosts: Host[],
  keep: number,
  log: Log,
  /** Per host label: the releases as listed since the switch (else they are listed now). */
  listings: Map<string, ReleaseListing> = new Map(),
): Promise<void> {
  await onEachHost(hosts, async (host) => {
    const plan = planCleanup(listings.get(host.spec.label) ?? (await listReleases(host)), keep);
    const { removed, kept } = await host.conn.step(cleanupStep(host.layout, plan));
    if (removed.length) log.info(`[${host.spec.label}] removed ${removed.join('; ')}`);
    if (kept.length) log.info(`[${host.spec.label}] kept ${kept.join('; ')} (a later cleanup removes it)`);
    return {};
  }).then((rs) =>
    rs.filter((r) => !r.ok).forEach((r) => log.warn(`cleanup on ${r.host} failed: ${r.error}`)),
  );
}

/** The rollback target, the same on every host: it must be a good release everywhere. */
export function rollbackTarget(
  hosts: Host[],
  listings: ReleaseListing[],
  requested: string,
): { target: string; from: string } {
  const first = listings[0]!;
  const pick = pickRollbackTarget(first, requested);
  if ('error' in pick) throw new Error(`cannot roll back on ${hosts[0]!.spec.label}: ${pick.error}`);
  listings.forEach((listing, i) => {
    const r = listing.releases.find((x) => x.id === pick.target);
    if (!r || r.status !== 'ready') {
      throw new Error(
        `cannot roll back to ${pick.target}: it is ${r ? r.status : 'missing'} on ${hosts[i]!.spec.label}`,
      );
    }
  });
  return { target: pick.target, from: first.links.current ?? '' };
}

/** A step on each host in parallel, where a failure is only warned of ("could not <doing> on <host>"). */
async function tryOnEach(
  hosts: Host[],
  stepOf: (h: Host) => Step<void>,
  doing: string,
  log: Log,
): Promise<void> {
  await Promise.all(
    hosts.map((h) =>
      h.conn
        .step(stepOf(h))
        .catch((e: unknown) => log.warn(`could not ${doing} on ${h.spec.label}: ${errorMessage(e)}`)),
    ),
  );
}

/** Undoes a start-only switch on hosts whose traffic never moved (see standDownStep). */
export function standDown(hosts: Host[], releaseId: string, log: Log): Promise<void> {
  return tryOnEach(hosts, (h) => standDownStep(h.layout, releaseId), `stop ${releaseId}`, log);
}

/** Takes the app out of service on hosts where a first release failed (see unserveStep). */
export function stopServing(hosts: Host[], log: Log): Promise<void> {
  return tryOnEach(hosts, (h) => unserveStep(h.layout), 'stop serving', log);
}

export function markBad(hosts: Host[], releaseId: string, reason: string, log: Log): Promise<void> {
  return tryOnEach(hosts, (h) => markStep(h.layout, releaseId, 'bad', reason), `mark ${releaseId} bad`, log);
}
