import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { withHosts } from '../stages/hosts.js';
import { hostStatuses, statusMarkdown } from '../stages/operations.js';
import { runAction, type ActionOutcome } from './run.js';

export async function status(settings: Settings<'status'>, log: Log): Promise<ActionOutcome> {
  return withHosts(
    { ...settings, 'lock-timeout': 0 },
    log,
    'status',
    async (hosts) => {
      const statuses = await hostStatuses(hosts, settings['history-lines']);
      const failed = statuses.filter((s) => !s.ok);
      return {
        outputs: {
          frozen: String(statuses.some((s) => s.frozen)),
          status: JSON.stringify(statuses),
        },
        results: statuses.map(({ host, ok, error, current, standby, locked, frozen }) => ({
          host,
          ok,
          ...(error ? { error } : {}),
          current,
          standby,
          locked,
          frozen,
        })),
        summary: statusMarkdown(statuses),
        failure: failed.length ? failed.map((s) => `${s.host}: ${s.error}`).join('\n') : undefined,
      };
    },
    { lock: false },
  );
}

export const run = () => runAction('status', status);
