import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { withHosts } from '../stages/hosts.js';
import { verifyStage } from '../stages/switch.js';
import { resultsTable, runAction, type ActionOutcome } from './run.js';

export async function verify(settings: Settings<'verify'>, log: Log): Promise<ActionOutcome> {
  const started = Date.now();
  // Verification only reads: it takes no deploy lock, so it can run beside a deploy.
  return withHosts(
    settings,
    log,
    'verify',
    async (hosts) => {
      const results = await verifyStage(hosts, settings, log);
      const failed = results.filter((r) => !r.ok);
      return {
        outputs: {
          healthy: String(failed.length === 0),
          attempts: String(Math.max(0, ...results.map((r) => r.attempts ?? 0))),
          'duration-seconds': ((Date.now() - started) / 1000).toFixed(1),
        },
        results,
        summary: resultsTable(results, [
          ['attempts', 'checks'],
          ['seconds', 'seconds'],
        ]),
        failure: failed.length ? failed.map((r) => r.error).join('\n') : undefined,
      };
    },
    { lock: false },
  );
}

export const run = () => runAction('verify', verify);
