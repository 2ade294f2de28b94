// The config file (.metalship.yml): shared settings and per-environment
// sections, read before any host is contacted. Its keys are the inputs' names
// and its values go through the inputs' own definitions; an input given in
// `with:` (or on the command line) overrides it. Secrets never come from it.

import { lstatSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { isAlias, isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import { actions, type ActionName } from './actions.js';
import { configInputs } from './config.js';
import { quote, type Field } from './fields.js';
import { InputError, trimInput, type InputOrigin, type RawInputs } from './parse.js';
import { suggestion } from '../suggest.js';

/** Larger than any config a team writes by hand; a larger file is refused unread. */
export const CONFIG_FILE_MAX = 256 * 1024;
/** YAML aliases allowed in all: enough for sharing, too few for a "billion laughs". */
const MAX_ALIASES = 100;
const ENVIRONMENTS = 'environments';

/** Every definition of each input name, over all actions (a name may differ per action, e.g. release-id). */
function definitionsByName(): Map<string, Field[]> {
  const out = new Map<string, Field[]>();
  for (const def of Object.values(actions))
    for (const [name, f] of Object.entries(def.inputs as Record<string, Field>)) {
      const list = out.get(name) ?? [];
      if (!list.includes(f)) list.push(f);
      out.set(name, list);
    }
  return out;
}

/**
 * Whether the user set an input (in `with:` or as a flag), as opposed to leaving
 * it out. The generated action.yml declares no defaults (code applies them), so
 * the runner passes a left-out input as ''; an input whose empty value means
 * something (emptyIsValue) keeps its action.yml default, so it is left out when
 * it is that default.
 */
export function inputGiven(f: Field, value: string | undefined): boolean {
  if (value === undefined) return false;
  const v = trimInput(value, f.multiline);
  return f.emptyIsValue ? v !== f.default : v !== '';
}

/** One setting of the file: its value as an input would give it, and where it is written. */
interface Entry {
  value: string;
  /** For messages: `file:line: key 'environments.production.hosts'`. */
  where: string;
}

export interface ConfigSource extends InputOrigin {
  /** The inputs, with the file's settings for those not given. */
  raw: RawInputs;
  /** The file read (as named), the section used and the settings taken from it, for the log. */
  file?: { name: string; environment: string; taken: string[] };
}

/**
 * The action's inputs with the config file under them: an input given wins,
 * then the chosen environment's section, then the file's shared settings, then
 * the definition's default. Throws an InputError naming the file, the line and
 * the key of every problem of the file, whichever action would take the key.
 */
export function withConfigFile(
  action: ActionName,
  raw: RawInputs,
  workspace = process.env.GITHUB_WORKSPACE || process.cwd(),
): ConfigSource {
  const plain: ConfigSource = { raw, where: () => undefined, missingHint: '' };
  const choose = (name: 'config' | 'environment') => {
    const f = configInputs[name] as Field<string>;
    const given = raw(name);
    const value = inputGiven(f, given) ? trimInput(given!) : (f.default ?? '');
    const r = f.schema.safeParse(value);
    if (!r.success)
      throw new InputError([
        `Input '${name}': ${r.error.issues[0]?.message ?? 'is not valid'}; expected ${f.expected}.`,
      ]);
    return { value: r.data, given: inputGiven(f, given) };
  };
  const config = choose('config');
  const environment = choose('environment').value;
  const file = path.resolve(workspace, config.value);

  let text: string;
  try {
    // A link (committed by anyone who can push: to .git/config and its token, or
    // to /dev/zero) or a device is refused: the file is read as it is in the repository.
    const st = lstatSync(file);
    if (!st.isFile())
      throw new InputError([
        `Input 'config': ${config.value} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a regular file'}; expected a regular file in the repository.`,
      ]);
    const size = st.size;
    if (size > CONFIG_FILE_MAX)
      throw new InputError([
        `${config.value}: is ${size} bytes, larger than ${CONFIG_FILE_MAX}: not a config file.`,
      ]);
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof InputError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    // Absent and not asked for: no config file, inputs only.
    if (code === 'ENOENT' && !config.given) return plain;
    throw new InputError([
      `Input 'config': cannot read ${config.value} (${code === 'ENOENT' ? 'no such file' : (code ?? 'error')}); expected ${
        config.given ? 'an existing file' : 'a readable file, or none'
      }.`,
    ]);
  }

  const parsed = parseConfig(config.value, text);
  const sections = parsed.environments;
  let section: Map<string, Entry> | undefined;
  let sectionName = '';
  if (environment) {
    const found = [...sections.keys()].find((k) => k.toLowerCase() === environment.toLowerCase());
    if (found !== undefined) [section, sectionName] = [sections.get(found), found];
    else if (parsed.hasEnvironments)
      throw new InputError([
        `Input 'environment': '${environment}' is not a section of ${config.value}${suggestion(environment, [...sections.keys()])} (its environments: ${
          [...sections.keys()].join(', ') || 'none'
        }); expected one of them, or a section added for it.`,
      ]);
  }

  const layer = new Map([...parsed.shared, ...(section ?? [])]);
  const inputs = actions[action].inputs as Record<string, Field>;
  const taken = Object.entries(inputs)
    .filter(([name, f]) => layer.has(name) && !f.notInConfig && !inputGiven(f, raw(name)))
    .map(([name]) => name);
  const fromFile = new Map(taken.map((name) => [name, layer.get(name)!]));
  const hint =
    !environment && sections.size
      ? ` (or in ${config.value}: no environment was chosen, so none of its sections ${[...sections.keys()].join(', ')} applies; set the environment input)`
      : ` (or in ${config.value})`;
  return {
    raw: (name) => fromFile.get(name)?.value ?? raw(name),
    where: (name) => fromFile.get(name)?.where,
    missingHint: hint,
    file: { name: config.value, environment: sectionName, taken },
  };
}

interface ParsedConfig {
  shared: Map<string, Entry>;
  environments: Map<string, Map<string, Entry>>;
  hasEnvironments: boolean;
}

/**
 * Parses and checks the whole file, every section and every key, whichever
 * action reads it: a mistake fails the first action run, not the one that
 * would use the key. Values are strings (YAML's failsafe schema): `3.10` stays
 * 3.10 and `true` true, as in a workflow's `with:`.
 */
export function parseConfig(name: string, text: string): ParsedConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, {
    schema: 'failsafe',
    lineCounter: lines,
    uniqueKeys: true,
    prettyErrors: false,
  });
  const at = (offset: number | undefined) =>
    offset === undefined ? name : `${name}:${lines.linePos(offset).line}`;
  const yamlProblems = [...doc.errors, ...doc.warnings].map(
    (e) => `${at(e.pos[0])}: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}.`,
  );
  if (yamlProblems.length) throw new InputError(yamlProblems, `problems in ${name}`);
  let js: unknown;
  try {
    js = doc.toJS({ mapAsMap: true, maxAliasCount: MAX_ALIASES });
  } catch (err) {
    // An alias bomb, or an alias before its anchor.
    throw new InputError([`${name}: ${(err as Error).message}.`]);
  }
  const empty: ParsedConfig = { shared: new Map(), environments: new Map(), hasEnvironments: false };
  if (js === null || js === '') return empty;
  if (!(js instanceof Map))
    throw new InputError([
      `${at(doc.contents?.range?.[0])}: the file is ${Array.isArray(js) ? 'a list' : 'a single value'}; expected a mapping of settings (key: value), with environments: under it.`,
    ]);

  const defs = definitionsByName();
  const known = [...defs.keys()].filter((k) => defs.get(k)!.some((f) => !f.notInConfig && !f.secret));
  const problems: string[] = [];
  const keyLine = (keyPath: string[]) => at(keyNode(doc, keyPath)?.range?.[0]);

  const section = (map: Map<unknown, unknown>, prefix: string[]): Map<string, Entry> => {
    const out = new Map<string, Entry>();
    // {app} in a value stands for the app name, as in an input.
    const appValue = map.get('app');
    const app = typeof appValue === 'string' && appValue.trim() ? appValue.trim() : 'app';
    for (const [key, value] of map) {
      if (typeof key !== 'string') {
        problems.push(
          `${name}: a key under ${prefix.join('.') || 'the top'} is not a plain name; expected input names.`,
        );
        continue;
      }
      if (prefix.length === 0 && key === ENVIRONMENTS) continue;
      const keyPath = [...prefix, key];
      const where = `${keyLine(keyPath)}: key ${quote(keyPath.join('.'))}`;
      const entry = checkKey(key, value, where, defs, known, app, prefix.length > 0);
      if (typeof entry === 'string') problems.push(entry);
      else out.set(key, entry);
    }
    return out;
  };

  const shared = section(js, []);
  const environments = new Map<string, Map<string, Entry>>();
  const envs = js.get(ENVIRONMENTS);
  const hasEnvironments = js.has(ENVIRONMENTS);
  if (hasEnvironments && envs !== '' && !(envs instanceof Map)) {
    problems.push(
      `${keyLine([ENVIRONMENTS])}: key '${ENVIRONMENTS}' is not a mapping; expected one section per environment, e.g. production: { hosts: ... }.`,
    );
  } else if (envs instanceof Map) {
    const lower = new Map<string, string>();
    for (const [env, body] of envs) {
      const keyPath = [ENVIRONMENTS, String(env)];
      const where = `${keyLine(keyPath)}: environment ${quote(String(env))}`;
      const valid =
        typeof env === 'string' && configInputs.environment.schema.safeParse(env).success && env !== '';
      if (!valid) {
        problems.push(`${where}: is not a valid name; expected ${configInputs.environment.expected}.`);
        continue;
      }
      const twin = lower.get(env.toLowerCase());
      if (twin !== undefined) {
        problems.push(
          `${where}: is '${twin}' again (names are compared ignoring case); expected each environment once.`,
        );
        continue;
      }
      lower.set(env.toLowerCase(), env);
      if (body !== '' && !(body instanceof Map)) {
        problems.push(`${where}: is not a mapping; expected its settings as key: value lines.`);
        continue;
      }
      environments.set(env, body instanceof Map ? section(body, keyPath) : new Map());
    }
  }
  if (problems.length) throw new InputError(problems, `problems in ${name}`);
  return { shared, environments, hasEnvironments };
}

/** A key's checked setting, or the problem with it (naming where it is). */
function checkKey(
  key: string,
  value: unknown,
  where: string,
  defs: Map<string, Field[]>,
  known: string[],
  app: string,
  inEnvironment: boolean,
): Entry | string {
  const fields = defs.get(key);
  if (!fields) {
    const hint =
      key === ENVIRONMENTS
        ? '; environments are sections of the top level only'
        : key === '<<'
          ? ' (YAML merge keys are not read: settings at the top level are shared by every environment)'
          : suggestion(key, known) ||
            `; expected an input name (docs/reference.md)${inEnvironment ? '' : ' or environments'}`;
    return `${where}: is not an input of any metalship action${hint}${hint.endsWith('?') ? '' : '.'}`;
  }
  if (fields.some((f) => f.secret))
    return `${where}: is a secret: pass it as an input from a GitHub secret (\${{ secrets.NAME }}), never in a file of the repository.`;
  const usable = fields.filter((f) => !f.notInConfig);
  if (usable.length === 0) return `${where}: is not read from the config file: ${fields[0]!.notInConfig}.`;
  const multiline = usable.some((f) => f.multiline);
  let text: string;
  if (typeof value === 'string') text = value;
  else if (Array.isArray(value) && multiline && value.every((v) => typeof v === 'string'))
    text = value.join('\n');
  else
    return `${where}: is ${Array.isArray(value) ? (multiline ? 'a list with a list or mapping in it' : 'a list') : 'a mapping'}; expected ${
      multiline ? 'a value or a list of values' : 'one value'
    }: ${usable[0]!.expected}.`;
  // The same checks as an input's (src/inputs/parse.ts): any action's definition of the key may take it.
  let first: string | undefined;
  for (const f of usable) {
    let v = trimInput(text, f.multiline);
    if (v === '' && f.default !== undefined && !f.emptyIsValue) v = f.default;
    if (v === '' && f.required) {
      first ??= `${where}: is empty; expected ${f.expected}.`;
      continue;
    }
    const r = f.schema.safeParse(v.replaceAll('{app}', key === 'app' ? '{app}' : app));
    if (r.success) return { value: text, where };
    first ??= `${where}: ${r.error.issues[0]?.message ?? 'is not valid'}; expected ${f.expected}.`;
  }
  return first!;
}

/** The key node at a path of map keys, for its line. */
function keyNode(doc: Document, keyPath: string[]): { range?: [number, number, number] | null } | undefined {
  let node: unknown = doc.contents;
  let key: { range?: [number, number, number] | null } | undefined;
  for (const k of keyPath) {
    if (isAlias(node)) node = node.resolve(doc);
    if (!isMap(node)) return key;
    const pair = node.items.find((p) => isScalar(p.key) && p.key.value === k);
    if (!pair) return key;
    key = pair.key as { range?: [number, number, number] | null };
    node = pair.value;
  }
  return key;
}
