// Operations on a live app: its status per host, and the deploy freeze
// (metalship lock / unlock) with the gate the deploy path passes.

import type { Log } from '../log.js';
import { freezeCheckStep, freezeStep, freezeText, unfreezeStep, type Freeze } from '../remote/freeze.js';
import { statusStep, type HostState } from '../remote/status.js';
import { GOOD, listStep, type ReleaseListing } from '../remote/verify.js';
import { lockHolder, onEachHost, type Host, type HostResult } from './hosts.js';

/**
 * What a freeze does to each action. Those that ship code or change the schema
 * are refused. A rollback passes, with a warning: during an incident it is the
 * remedy; while frozen it may only go back to a release that was already live,
 * without migrate-down, which its own gate checks (freezeAllowsRollback). Provision
 * passes too: it converges the server (a fix may need it), not the app's code.
 * Reading actions (status, verify) and lock/unlock never look.
 */
const FREEZE_REFUSES = new Set(['deploy', 'release', 'switch', 'migrate']);
const FREEZE_WARNS = new Set(['provision']);

/** The action looks for a freeze (freezeGate does something). */
export function freezeGated(action: string): boolean {
  return FREEZE_REFUSES.has(action) || FREEZE_WARNS.has(action);
}

/**
 * Refuses the action on frozen hosts (before it changes anything), or warns
 * when it passes a freeze. `read`: each host's freezeCheckStep, already run
 * (in the lock's round trip); otherwise it is run now.
 */
export async function freezeGate(
  hosts: Host[],
  action: string,
  log: Log,
  read?: (Freeze | null)[],
): Promise<void> {
  if (!freezeGated(action)) return;
  const found = read ?? (await Promise.all(hosts.map((h) => h.conn.step(freezeCheckStep(h.layout)))));
  const frozen = hosts.flatMap((h, i) => (found[i] ? [`${h.spec.label}: ${freezeText(found[i])}`] : []));
  if (frozen.length === 0) return;
  if (FREEZE_WARNS.has(action)) {
    for (const f of frozen) log.warn(`${action} passes the deploy freeze: ${f}`);
    return;
  }
  throw new Error(
    `deploys of ${hosts[0]!.layout.app} are frozen; the ${action} was refused and nothing was changed:\n` +
      frozen.map((f) => `- ${f}`).join('\n') +
      `\nLift the freeze with 'metalship unlock' (actions/unlock) when the incident is over.`,
  );
}

/**
 * A rollback passes a freeze only when it goes back: to a release that served,
 * older than current, with no schema change (anything else ships something
 * new), and then with a warning. Its own gate: the generic one cannot know the target.
 */
export function freezeAllowsRollback(
  hosts: Host[],
  listings: ReleaseListing[],
  /** The freeze each host has (read with its listing, in the same round trip). */
  found: (Freeze | null)[],
  target: string,
  migrateDown: boolean,
  log: Log,
): void {
  const frozen = hosts.flatMap((h, i) => (found[i] ? [`${h.spec.label}: ${freezeText(found[i])}`] : []));
  if (frozen.length === 0) return;
  const problems = migrateDown ? ['migrate-down changes the schema'] : [];
  listings.forEach((listing, i) => {
    const label = hosts[i]!.spec.label;
    const to = listing.releases.find((r) => r.id === target);
    const current = listing.releases.find((r) => r.id === listing.links.current);
    if (!to?.served) problems.push(`${target} never served on ${label}`);
    else if (current && to.created >= current.created)
      problems.push(`${target} is not older than the current ${current.id} on ${label}`);
  });
  if (problems.length)
    throw new Error(
      `deploys of ${hosts[0]!.layout.app} are frozen, and a rollback then only goes back to a release that served, without migrate-down; refused, nothing was changed: ${problems.join('; ')}`,
    );
  for (const f of frozen) log.warn(`rollback passes the deploy freeze: ${f}`);
}

export interface FreezeResult extends HostResult {
  /** The freeze replaced (lock) or lifted (unlock), as text; '' for none. */
  before?: string;
}

export function newFreeze(reason: string): Freeze {
  const h = lockHolder('lock');
  return { reason, actor: h.actor, at: h.startedAt, runUrl: h.runUrl };
}

export async function freezeHosts(hosts: Host[], freeze: Freeze): Promise<FreezeResult[]> {
  return onEachHost(hosts, async (h) => {
    const before = await h.conn.step(freezeStep(h.layout, freeze));
    return { before: before ? freezeText(before) : '' };
  });
}

export async function unfreezeHosts(hosts: Host[]): Promise<FreezeResult[]> {
  return onEachHost(hosts, async (h) => {
    const before = await h.conn.step(unfreezeStep(h.layout));
    return { before: before ? freezeText(before) : '' };
  });
}

export interface ReleaseRow {
  id: string;
  status: string;
  /** current, standby (the other api slot's, kept warm for a rollback), or ''. */
  role: string;
  revision: string;
}

export interface HostStatus extends HostResult {
  current?: string;
  standby?: string;
  slot?: string;
  releases?: ReleaseRow[];
  locked?: boolean;
  holder?: string;
  frozen?: boolean;
  freeze?: Freeze | null;
  history?: string[];
}

/** Releases newest first, each with its part: current, standby, or none. */
export function releaseRows(
  listing: ReleaseListing,
  state: Pick<HostState, 'activeSlot' | 'running'>,
): ReleaseRow[] {
  const current = listing.links.current ?? '';
  const other = state.activeSlot === 'blue' ? 'green' : state.activeSlot === 'green' ? 'blue' : '';
  const standby = other ? (listing.links[`slots/${other}`] ?? '') : '';
  return [...listing.releases]
    .sort((a, b) => b.created - a.created || b.id.localeCompare(a.id))
    .map((r) => ({
      id: r.id,
      status: r.status,
      role:
        r.id === current
          ? `current${state.activeSlot ? ` (${state.activeSlot})` : ''}`
          : r.id === standby && GOOD.has(r.status)
            ? `standby (${other}, ${state.running.includes(other) ? 'running' : 'stopped'})`
            : '',
      revision: r.revision,
    }));
}

export async function hostStatuses(hosts: Host[], historyLines: number): Promise<HostStatus[]> {
  return onEachHost(hosts, async (h) => {
    const [listing, state] = await Promise.all([
      h.conn.step(listStep(h.layout)),
      h.conn.step(statusStep(h.layout, historyLines)),
    ]);
    const releases = releaseRows(listing, state);
    return {
      current: listing.links.current ?? '',
      standby: releases.find((r) => r.role.startsWith('standby'))?.id ?? '',
      slot: state.activeSlot,
      releases,
      locked: state.locked,
      holder: state.holder,
      frozen: state.freeze !== null,
      freeze: state.freeze,
      history: state.history,
    };
  });
}

const cell = (t: string) => t.replace(/\|/g, '\\|');

/** The status as markdown: readable as it is on a terminal, and rendered in a job summary. */
export function statusMarkdown(statuses: HostStatus[]): string {
  return statuses
    .map((s) => {
      if (!s.ok) return `### ${s.host}\n\n❌ ${cell(s.error ?? 'unknown error')}`;
      const lock = s.locked
        ? `held by ${s.holder || 'an unnamed run'}`
        : `free${s.holder ? ` (left by ${s.holder})` : ''}`;
      const rows = (s.releases ?? []).map(
        (r) => `| ${r.id} | ${r.status} | ${cell(r.role)} | ${cell(r.revision || '')} |`,
      );
      return [
        `### ${s.host}`,
        '',
        s.freeze ? `**Deploys ${cell(freezeText(s.freeze))}**` : 'Deploys: not frozen',
        '',
        `Deploy lock: ${cell(lock)}`,
        '',
        rows.length
          ? ['| release | status | part | revision |', '|---|---|---|---|', ...rows].join('\n')
          : 'No releases.',
        '',
        'Last entries of the history log:',
        '',
        // Indented, not fenced: a line of the log cannot end the block.
        ...(s.history?.length ? s.history.map((l) => `    ${l}`) : ['    (none)']),
      ].join('\n');
    })
    .join('\n\n');
}
