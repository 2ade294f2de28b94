// backup-verify: proves that a backup restores (see src/stages/backup-verify.ts),
// then records the proof on the backup host and reports it.

import type { Settings } from '../inputs/parse.js';
import type { Log } from '../log.js';
import {
  recordVerification,
  recoveryReport,
  restoreFailure,
  restoreOutputs,
  restoreResults,
  restoreTest,
  withRestoreHosts,
} from '../stages/backup-verify.js';
import { runAction, type ActionOutcome } from './run.js';

export async function backupVerify(settings: Settings<'backup-verify'>, log: Log): Promise<ActionOutcome> {
  return withRestoreHosts(settings, log, async (run) => {
    const test = await restoreTest(run);
    await recordVerification(run, test);
    return {
      outputs: restoreOutputs(test),
      results: restoreResults(run, test),
      summary: recoveryReport(run, test),
      failure: restoreFailure(test),
    };
  });
}

export const run = () => runAction('backup-verify', backupVerify);
