import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { withHosts } from '../stages/hosts.js';
import { cleanupStage, switchFleet } from '../stages/switch.js';
import { resultsTable, runAction, type ActionOutcome } from './run.js';

export async function switchRelease(s: Settings<'switch'>, log: Log): Promise<ActionOutcome> {
  return withHosts(s, log, 'switch', async (hosts) => {
    const sw = await switchFleet(hosts, s['release-id'], s, log);
    const failed = sw.results.filter((r) => !r.ok);
    if (!failed.length) await cleanupStage(hosts, s['keep-releases'], log);
    return {
      outputs: {
        'release-id': failed.length ? '' : s['release-id'],
        'previous-release-id': sw.results.find((r) => r.previous)?.previous ?? '',
      },
      results: sw.results,
      summary:
        `Switch to **${s['release-id']}**\n\n` +
        resultsTable(sw.results, [
          ['previous', 'previous'],
          ['slot', 'slot'],
          ['seconds', 'seconds'],
        ]) +
        (sw.reverted.length ? `\n\nReverted to their previous release: ${sw.reverted.join(', ')}` : ''),
      failure: failed.length ? failed.map((r) => `${r.host}: ${r.error}`).join('\n') : undefined,
    };
  });
}

export const run = () => runAction('switch', switchRelease);
