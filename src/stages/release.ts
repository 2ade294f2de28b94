// The release stage: a new release directory on every host, with only the
// changed files sent, its virtualenv built or reused, and an import check.

import type { DotenvText } from '../inputs/dotenv.js';
import type { Log } from '../log.js';
import { runtimeOf, runtimeRecord, type Runtime } from '../inputs/runtime.js';
import { buildStep, markStep, prepareStep, RELEASE_EXISTS_EXIT } from '../remote/release.js';
import { RemoteError } from '../transport/ssh.js';
import { onEachHost, type Host, type HostResult } from './hosts.js';
import { buildManifest, packFiles, sourceRevision, venvKey, type Manifest } from './source.js';
import { errorMessage } from '../errors.js';

export interface ReleaseSettings extends Runtime {
  source: string;
  exclude: string[];
  'release-id': string;
  requirements: string;
  'shared-paths': string[];
  /** The release's own .env (text ''): when empty it links the app's shared one. */
  env: DotenvText;
  python: string;
  'pip-args': string[];
  'system-site-packages': boolean;
  'import-check': boolean;
}

export interface ReleaseOutcome {
  releaseId: string;
  results: (HostResult & {
    previous?: string;
    bytesUploaded?: number;
    filesReused?: number;
    filesSent?: number;
    seconds?: number;
  })[];
}

/** UTC YYYYMMDD_HHMMSS, the standard's release directory name. */
export function timestampId(date = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${date.getUTCFullYear()}${p(date.getUTCMonth() + 1)}${p(date.getUTCDate())}_${p(date.getUTCHours())}${p(date.getUTCMinutes())}${p(date.getUTCSeconds())}`;
}

function metadata(releaseId: string, settings: ReleaseSettings, source: Source): Record<string, unknown> {
  const e = process.env;
  return {
    id: releaseId,
    revision: source.revision,
    ref: e.GITHUB_REF ?? '',
    run_url: e.GITHUB_RUN_ID
      ? `${e.GITHUB_SERVER_URL ?? 'https://github.com'}/${e.GITHUB_REPOSITORY}/actions/runs/${e.GITHUB_RUN_ID}`
      : '',
    actor: e.GITHUB_ACTOR ?? e.USER ?? '',
    created: new Date().toISOString(),
    created_epoch: Date.now() / 1000,
    files: source.manifest.files.length,
    requirements: settings.requirements,
  };
}

async function releaseOnHost(
  host: Host,
  releaseId: string,
  settings: ReleaseSettings,
  source: Source,
  log: Log,
  switchFollows: boolean,
) {
  const { manifest, key } = source;
  const started = Date.now();
  const layout = host.layout;
  const prepare = prepareStep(
    {
      layout: layout,
      releaseId,
      user: settings['app-user'],
      sharedPaths: settings['shared-paths'],
      stopStandby: switchFollows && host.roles.api,
    },
    manifest,
  );
  const answer = await host.conn.run(prepare.script, {
    input: Buffer.from(JSON.stringify(manifest)),
    what: prepare.what,
  });
  try {
    // Read here, not by conn.step: a host's unusable answer marks its release failed too.
    const { previous, ...staged } = prepare.parse(answer.stdout);
    const tarball = await packFiles(settings.source, manifest, staged.need);
    await host.conn.step(
      buildStep({
        layout: layout,
        releaseId,
        user: settings['app-user'],
        hasUpload: tarball.length > 0,
        python: settings.python,
        venvKey: key,
        requirements: settings.requirements,
        pipArgs: settings['pip-args'],
        systemSitePackages: settings['system-site-packages'],
        sharedPaths: settings['shared-paths'],
        env: settings.env.text,
        // A host whose switch starts the release in a slot has that start as
        // its check; one without the api role starts only workers: it imports first.
        importCheck:
          settings['import-check'] && !(switchFollows && host.roles.api) ? settings['app-module'] : null,
        metadata: metadata(releaseId, settings, source),
        runtimeRecord: runtimeRecord(runtimeOf(settings)),
      }),
      { input: tarball, stream: true },
    );
    return {
      previous,
      bytesUploaded: tarball.length,
      filesSent: staged.need.length,
      filesReused: staged.reused,
      seconds: (Date.now() - started) / 1000,
    };
  } catch (err) {
    const reason = errorMessage(err);
    await host.conn
      .step(markStep(layout, releaseId, 'failed', reason))
      .catch((e) => log.warn(`could not mark ${releaseId} failed on ${host.spec.label}: ${e}`));
    throw err;
  }
}

/** What a release sends: the source's manifest and the key of its virtualenv, and the commit it is (recorded). */
export interface Source {
  manifest: Manifest;
  key: string;
  /** The git revision, or empty when unknown. */
  revision: string;
}

/**
 * Reads the source on the runner. Called before any host is contacted, so a
 * source that cannot be sent (a link out of the tree, a special file) fails
 * with nothing changed anywhere.
 */
export async function readSource(settings: ReleaseSettings): Promise<Source> {
  const manifest = await buildManifest(settings.source, settings.exclude, settings['shared-paths']);
  const key = await venvKey(
    settings.source,
    settings.requirements,
    [settings.python, ...settings['pip-args'], String(settings['system-site-packages'])],
    manifest,
  );
  return { manifest, key, revision: await sourceRevision(settings.source) };
}

export async function releaseStage(
  hosts: Host[],
  settings: ReleaseSettings,
  source: Source,
  log: Log,
  /** A switch follows in this run: api hosts skip the import check (their start in the standby slot is the check). */
  opts: { switchFollows?: boolean } = {},
): Promise<ReleaseOutcome> {
  const base = settings['release-id'] || timestampId();
  for (let attempt = 0; attempt < 5; attempt++) {
    const releaseId = attempt === 0 ? base : `${base}_${attempt + 1}`;
    const results = await log.group(`Release ${releaseId} on ${hosts.length} host(s)`, () =>
      onEachHost(hosts, (h) =>
        releaseOnHost(h, releaseId, settings, source, log, opts.switchFollows === true),
      ),
    );
    const taken = results.some((r) => !r.ok && r.error?.includes(`exit code ${RELEASE_EXISTS_EXIT}`));
    if (taken && !settings['release-id']) {
      // The id is taken on some host: give back what we claimed and try the next name.
      await Promise.all(
        hosts.map((h, i) =>
          results[i]?.ok
            ? h.conn.step(markStep(h.layout, releaseId, 'failed', 'release id taken on another host'))
            : null,
        ),
      );
      continue;
    }
    return { releaseId, results };
  }
  throw new RemoteError(`could not find a free release id after ${base}`, '', null, '');
}
