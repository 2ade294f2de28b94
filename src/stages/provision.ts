// The provision stage: on each host, read a few facts, then run every item's
// script over the host's one connection and collect ok / changed / warning /
// failed per item. A guarded change (firewall, sshd) is kept only when a fresh
// connection still gets in; otherwise it is reverted over the connection we hold.

import type { Log } from '../log.js';
import {
  factsStep,
  unknownSystem,
  itemStep,
  guardStep,
  precheckStep,
  type ItemReport,
  planItems,
  type HostFacts,
  type ItemName,
  type ProvisionSettings,
} from '../remote/provision/index.js';
import { connect } from '../transport/ssh.js';
import { connectOptions, type ConnectionSettings, type Host, type HostResult } from './hosts.js';
import { errorMessage } from '../errors.js';

export interface ItemResult {
  item: ItemName;
  status: 'ok' | 'changed' | 'warning' | 'failed';
  detail: string;
  seconds: number;
}

export interface ProvisionHostResult extends HostResult {
  os?: string;
  python?: string;
  changed?: number;
  failed?: number;
  items?: ItemResult[];
}

/** Opens one more connection (the runner's key, address and algorithms) and runs `true` over it. */
export type FreshConnectionTest = () => Promise<void>;

export function freshConnectionTest(host: Host, settings: ConnectionSettings, log: Log): FreshConnectionTest {
  return async () => {
    const conn = await connect(
      {
        host: host.spec.host,
        port: host.spec.port,
        user: host.spec.user ?? settings['ssh-user'],
        label: host.spec.label,
      },
      { ...connectOptions(settings), connectTimeoutMs: Math.min(settings['connect-timeout'], 15) * 1000 },
      log,
    );
    try {
      await conn.run('true', { what: 'the fresh connection test' });
    } finally {
      await conn.close();
    }
  };
}

/**
 * What each host is, read before anything is written (the lock included): a
 * system provision does not know fails the whole run here, unless allowed.
 */
export async function readHostFacts(hosts: Host[], allowUntestedOs: boolean): Promise<Map<Host, HostFacts>> {
  const facts = new Map<Host, HostFacts>();
  for (const host of hosts) facts.set(host, await host.conn.step(factsStep()));
  const refused = hosts.flatMap((h) => {
    const why = unknownSystem(facts.get(h)!);
    return why && !allowUntestedOs ? [`[${h.spec.label}] ${why}`] : [];
  });
  if (refused.length) throw new Error(refused.join('\n'));
  return facts;
}

/**
 * Every item's refusals on this host, read before any item runs on any host
 * (the run goes on only when no host refuses): a refusal then leaves every
 * host as it was, including what items before the refusing one would write.
 */
export async function precheckHost(
  host: Host,
  facts: HostFacts,
  settings: ProvisionSettings,
  log: Log,
): Promise<ItemResult[]> {
  const refused: ItemResult[] = [];
  for (const { item } of planItems(settings, facts)) {
    if (!item?.precheck) continue;
    const started = Date.now();
    const why = await host.conn
      .step(precheckStep({ ...item, precheck: item.precheck }))
      .catch((err: unknown) => errorMessage(err));
    if (!why) continue;
    refused.push({ item: item.name, status: 'failed', detail: why, seconds: (Date.now() - started) / 1000 });
    log.info(`[${host.spec.label}] ✗ ${item.name}: refused before any change (${why})`);
  }
  return refused;
}

export async function provisionHost(
  host: Host,
  facts: HostFacts,
  settings: ProvisionSettings,
  test: FreshConnectionTest,
  log: Log,
): Promise<ProvisionHostResult> {
  const label = host.spec.label;
  log.info(`[${label}] ${facts.os}${settings.check ? ' (check mode: nothing is changed)' : ''}`);
  if (unknownSystem(facts))
    log.warn(
      `[${label}] ${facts.os} is a system provision has not been tested on; provisioning it anyway (allow-untested-os)`,
    );
  const items: ItemResult[] = [];
  let python = '';
  for (const planned of planItems(settings, facts)) {
    const started = Date.now();
    if (!planned.item) {
      items.push({ item: planned.name, status: 'ok', detail: `not managed (${planned.off})`, seconds: 0 });
      continue;
    }
    const item = planned.item;
    const report = await host.conn.step(itemStep(item)).catch((err: unknown): ItemReport => ({
      outcome: { status: 'failed', changes: [], warnings: [], detail: errorMessage(err) },
      python: null,
      notes: [],
      guarded: false,
    }));
    python = report.python ?? python;
    let detail = [report.outcome.detail, ...report.notes].filter(Boolean).join('; ');
    let status = report.outcome.status;
    // A guarded change stays only if a new connection still gets in.
    const guarded = item.guard && report.guarded && !settings.check ? { ...item, guard: item.guard } : null;
    if (guarded) {
      try {
        await test();
        await host.conn.step(guardStep(guarded, 'confirm'));
        detail += '; a fresh SSH connection got in';
      } catch (err) {
        const why = errorMessage(err).split('\n')[0];
        let reverted = 'reverted';
        try {
          await host.conn.step(guardStep(guarded, 'revert'));
        } catch (e) {
          reverted = `revert failed too (${errorMessage(e).split('\n')[0]}); a timer reverts it within 3 minutes`;
        }
        status = 'failed';
        detail = `a fresh SSH connection failed after the change (${why}): ${reverted}`;
      }
    }
    const result = { item: item.name, status, detail: detail || '–', seconds: (Date.now() - started) / 1000 };
    items.push(result);
    const mark = { ok: '✓', changed: '~', warning: '!', failed: '✗' }[status];
    log.info(
      `[${label}] ${mark} ${item.name}: ${status}${detail ? ` (${detail})` : ''} ${result.seconds.toFixed(1)} s`,
    );
  }
  const failed = items.filter((i) => i.status === 'failed').length;
  return {
    host: label,
    ok: failed === 0,
    ...(failed
      ? {
          error: `${failed} item(s) failed: ${items
            .filter((i) => i.status === 'failed')
            .map((i) => i.item)
            .join(', ')}`,
        }
      : {}),
    os: facts.os,
    python,
    changed: items.filter((i) => i.status === 'changed').length,
    failed,
    items,
  };
}
