// metalship lock / unlock: the deploy freeze (see src/stages/operations.ts).

import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { withHosts } from '../stages/hosts.js';
import { freezeHosts, newFreeze, unfreezeHosts, type FreezeResult } from '../stages/operations.js';
import { resultsTable, runAction, type ActionOutcome } from './run.js';

function outcome(results: FreezeResult[], summary: string, outputs: Record<string, string> = {}): ActionOutcome {
  const failed = results.filter((r) => !r.ok);
  return {
    outputs,
    results,
    summary: summary + '\n\n' + resultsTable(results, [['before', 'before']]),
    failure: failed.length ? failed.map((r) => `${r.host}: ${r.error}`).join('\n') : undefined,
  };
}

export async function lock(settings: Settings<'lock'>, log: Log): Promise<ActionOutcome> {
  // No deploy lock: the freeze takes effect at once, and a deploy running now finishes.
  return withHosts(
    { ...settings, 'lock-timeout': 0 },
    log,
    'lock',
    async (hosts) => {
      const results = await freezeHosts(hosts, newFreeze(settings.reason));
      for (const r of results) if (r.ok) log.info(`[${r.host}] deploys of ${settings.app} are frozen`);
      return outcome(results, `Deploys of **${settings.app}** frozen: ${settings.reason.replace(/\|/g, '\\|')}`);
    },
    { lock: false },
  );
}

export async function unlock(settings: Settings<'unlock'>, log: Log): Promise<ActionOutcome> {
  return withHosts(
    { ...settings, 'lock-timeout': 0 },
    log,
    'unlock',
    async (hosts) => {
      const results = await unfreezeHosts(hosts);
      for (const r of results)
        if (r.ok) log.info(`[${r.host}] ${r.before ? `lifted: ${r.before}` : 'deploys were not frozen'}`);
      return outcome(results, `Deploys of **${settings.app}** unfrozen`, {
        'was-frozen': String(results.some((r) => r.before)),
      });
    },
    { lock: false },
  );
}

export const runLock = () => runAction('lock', lock);
export const runUnlock = () => runAction('unlock', unlock);
