import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import { withHosts } from '../stages/hosts.js';
import { readSource, releaseStage } from '../stages/release.js';
import { resultsTable, runAction, type ActionOutcome } from './run.js';

export async function release(settings: Settings<'release'>, log: Log): Promise<ActionOutcome> {
  const source = await readSource(settings);
  return withHosts(settings, log, 'release', async (hosts) => {
    const out = await releaseStage(hosts, settings, source, log);
    const failed = out.results.filter((r) => !r.ok);
    return {
      outputs: {
        'release-id': out.releaseId,
        'release-path': hosts[0]!.layout.release(out.releaseId),
        'previous-release-id': out.results.find((r) => r.previous)?.previous ?? '',
        'bytes-uploaded': String(out.results.reduce((n, r) => n + (r.bytesUploaded ?? 0), 0)),
      },
      results: out.results,
      summary:
        `Release **${out.releaseId}**\n\n` +
        resultsTable(out.results, [
          ['previous', 'previous'],
          ['filesSent', 'files sent'],
          ['filesReused', 'files reused'],
          ['bytesUploaded', 'bytes sent'],
          ['seconds', 'seconds'],
        ]),
      failure: failed.length ? failed.map((r) => `${r.host}: ${r.error}`).join('\n') : undefined,
    };
  });
}

export const run = () => runAction('release', release);
