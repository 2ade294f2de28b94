// The settings a release runs with, recorded with it when it is made
// (releases/<id>/.metalship/runtime.json, root's): a switch or a rollback to
// it renders the same unit files and checks the same health path, whatever
// its own inputs leave out. The record is read back through the inputs' own
// definitions, so nothing in it reaches a unit file that an input could not.

import { custom, type Field, type SettingsOf } from './fields.js';
import { serviceInputs } from './definitions.js';

export const RUNTIME_KEYS = [
  'app-user',
  'app-module',
  'uvicorn-args',
  'worker-command',
  'scheduler-command',
  'units-ready',
  'health-path',
] as const;
export type RuntimeKey = (typeof RUNTIME_KEYS)[number];

const runtimeFields = Object.fromEntries(RUNTIME_KEYS.map((k) => [k, serviceInputs[k]])) as Pick<
  typeof serviceInputs,
  RuntimeKey
>;

/** Every runtime setting of a release. */
export type Runtime = SettingsOf<typeof runtimeFields>;
/** What a switch or rollback was told explicitly: undefined takes the release's own. */
export type RuntimeOverrides = { [K in RuntimeKey]?: Runtime[K] | undefined };

export const RUNTIME_RECORD_FORMAT = 1;
/** Settings added after format 1's first records: a record without one ran as its value here says. */
const ADDED_LATER: Partial<Record<RuntimeKey, string>> = { 'units-ready': 'stable' };

/** Larger than any record we write; a larger file is refused unread. */
export const RUNTIME_RECORD_MAX = 16384;

/** The config file gives runtime settings to the releases made, which record them; a switch or rollback takes the record. */
const SET_WHEN_RELEASED =
  'switch, rollback and verify run a release with the settings recorded with it, those the config file gave when it was released';

/** An input of switch and rollback: empty (the default) takes the value recorded with the release. */
function fromRelease<T>(f: Field<T>, none: string): Field<T | undefined> {
  return custom<T | undefined>(
    {
      description: `${f.description.replace(/ Left out: .*$/, '')} Switch, rollback and verify: left empty, the value recorded with the release (what it was deployed with)${none}.`,
      default: '',
      notInConfig: SET_WHEN_RELEASED,
    },
    { expected: `${f.expected}, or empty for the release's own` },
    (v) => {
      if (v === '') return undefined;
      const r = f.schema.safeParse(v);
      return r.success ? r.data : { error: r.error.issues[0]?.message ?? 'is not valid' };
    },
  );
}

/** The runtime inputs of switch and rollback: each overrides the release's record only when given. */
export const recordedRuntimeInputs = {
  'app-user': fromRelease(serviceInputs['app-user'], ''),
  'app-module': fromRelease(serviceInputs['app-module'], ''),
  'uvicorn-args': fromRelease(serviceInputs['uvicorn-args'], ''),
  'worker-command': fromRelease(serviceInputs['worker-command'], '; `none` turns the worker off'),
  'scheduler-command': fromRelease(serviceInputs['scheduler-command'], '; `none` turns the scheduler off'),
  'units-ready': fromRelease(serviceInputs['units-ready'], ''),
  'health-path': fromRelease(serviceInputs['health-path'], ''),
} satisfies Record<RuntimeKey, Field>;

/** The runtime settings out of an action's settings. */
export function runtimeOf<R extends RuntimeOverrides>(
  settings: R,
): R extends Runtime ? Runtime : RuntimeOverrides {
  return Object.fromEntries(RUNTIME_KEYS.map((k) => [k, settings[k]])) as R extends Runtime
    ? Runtime
    : RuntimeOverrides;
}

/** A setting as the input would be written: commands as their words, no command as `none`. */
function asInput(key: RuntimeKey, value: Runtime[RuntimeKey]): string {
  if (typeof value === 'string') return value;
  if (value.length === 0 && (key === 'worker-command' || key === 'scheduler-command')) return 'none';
  return value.join(' ');
}

/** The record's text: every setting as the input that gives it. */
export function runtimeRecord(runtime: Runtime): string {
  const settings = Object.fromEntries(RUNTIME_KEYS.map((k) => [k, asInput(k, runtime[k])]));
  return JSON.stringify({ format: RUNTIME_RECORD_FORMAT, settings }, null, 2) + '\n';
}

/**
 * Reads a record back, validating every setting with its input's definition.
 * Root writes the record, in a directory only root can write; it is checked
 * all the same, as an input is, because its values end up in unit files that
 * root installs (a line break in app-module would add a directive). Throws
 * naming the problem, never echoing more than a short quote.
 */
export function parseRuntimeRecord(text: string): Runtime {
  if (text.length > RUNTIME_RECORD_MAX) throw new Error(`it is larger than ${RUNTIME_RECORD_MAX} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error('it is not JSON');
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new Error('it is not a JSON object');
  const { format, settings } = doc as { format?: unknown; settings?: unknown };
  if (format !== RUNTIME_RECORD_FORMAT)
    throw new Error(`its format is ${JSON.stringify(format)?.slice(0, 20)}, not ${RUNTIME_RECORD_FORMAT}`);
  if (!settings || typeof settings !== 'object' || Array.isArray(settings))
    throw new Error('its settings are not a JSON object');
  const out: Record<string, unknown> = {};
  for (const key of RUNTIME_KEYS) {
    const value: unknown = Object.hasOwn(settings, key)
      ? (settings as Record<string, unknown>)[key]
      : ADDED_LATER[key];
    if (typeof value !== 'string')
      throw new Error(`its ${key} is ${value === undefined ? 'missing' : 'not a string'}`);
    const r = runtimeFields[key].schema.safeParse(value);
    if (!r.success) throw new Error(`its ${key} ${r.error.issues[0]?.message ?? 'is not valid'}`);
    out[key] = r.data;
  }
  return out as Runtime;
}

/** The settings a switch uses: what it was told, else the record, else (a release made before records) the defaults. */
export function effectiveRuntime(
  overrides: RuntimeOverrides,
  recorded: Runtime | null,
  defaults: Runtime,
): Runtime {
  const base = recorded ?? defaults;
  return Object.fromEntries(RUNTIME_KEYS.map((k) => [k, overrides[k] ?? base[k]])) as Runtime;
}

/** The standard's settings for an app: every runtime input at its default. */
export function runtimeDefaults(app: string): Runtime {
  const out: Record<string, unknown> = {};
  for (const key of RUNTIME_KEYS) {
    const f = runtimeFields[key];
    out[key] = f.schema.parse((f.default ?? '').replaceAll('{app}', app));
  }
  return out as Runtime;
}
