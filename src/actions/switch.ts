import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { hasBalancer } from '../inputs/hosts.js';
import { withHosts } from '../stages/hosts.js';
import { rollOut } from '../stages/rollout.js';
import { cleanupStage, markBad } from '../stages/switch.js';
import { resultsTable, runAction, type ActionOutcome } from './run.js';

export async function switchRelease(settings: Settings<'switch'>, log: Log): Promise<ActionOutcome> {
  return withHosts(settings, log, 'switch', async (hosts) => {
    // Each host waits for the new release's readiness before it moves traffic;
    // the full health check is the verify action's.
    const sw = await rollOut(hosts, hasBalancer(settings.hosts), settings['release-id'], settings, log, {
      verify: null,
      revertOnFailure: true,
    });
    if (!sw.failure) await cleanupStage(hosts, settings['keep-releases'], log);
    // It served with this run's settings (its record says so) and failed: never a default target again.
    else if (sw.reverted.length) await markBad(hosts, settings['release-id'], 'failed after a switch', log);
    return {
      outputs: {
        'release-id': sw.failure ? '' : settings['release-id'],
        'previous-release-id': sw.results.find((r) => r.previous)?.previous ?? '',
      },
      results: sw.results,
      summary:
        `Switch to **${settings['release-id']}**\n\n` +
        resultsTable(sw.results, [
          ['batch', 'batch'],
          ['previous', 'previous'],
          ['slot', 'slot'],
          ['seconds', 'seconds'],
        ]) +
        (sw.reverted.length ? `\n\nReverted to their previous release: ${sw.reverted.join(', ')}` : ''),
      failure: sw.failure,
    };
  });
}

export const run = () => runAction('switch', switchRelease);
