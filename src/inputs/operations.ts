// Inputs of the operations on a live app: status, lock and unlock.

import { connectionInputs, PER_RUN } from './definitions.js';
import { int, text, type Field } from './fields.js';
import { REASON_MAX } from '../remote/freeze.js';

// They take no deploy lock: status only reads, and a freeze must work while a deploy runs.
const { 'lock-timeout': _lock, ...connection } = connectionInputs;
void _lock;
export const operationConnectionInputs = connection;

export const statusInputs = {
  'history-lines': int({
    description: 'Entries of the history log to show per host (the latest).',
    default: '10',
    min: 0,
    max: 1000,
  }),
} satisfies Record<string, Field>;

export const lockInputs = {
  reason: text({
    description:
      'Why deploys are frozen, printed by every deploy the freeze refuses, e.g. "incident 42: payments down, do not deploy".',
    required: true,
    notInConfig: PER_RUN,
    max: REASON_MAX,
    expected: `one line of at most ${REASON_MAX} characters`,
  }),
} satisfies Record<string, Field>;
