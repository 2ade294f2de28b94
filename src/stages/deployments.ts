// GitHub Deployments: each deploy and rollback recorded for its environment, so
// the repository's Environments page shows what is live where. Advisory: no
// answer of GitHub's fails or stops a deploy, and the token never leaves here
// but in the Authorization header. Four REST calls, made with Node's own HTTP
// client: @actions/github (Octokit, and an HTTP client of its own) was a
// megabyte of every bundle, compiled at every start, for them.

import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { Log } from '../log.js';
import { errorMessage } from '../errors.js';
import { configInputs } from '../inputs/config.js';

export interface DeploymentSettings {
  app: string;
  'github-deployments': boolean;
  'github-token': string;
  environment: string;
  'environment-url': string;
  url: string;
}

export interface DeploymentRecord {
  /** The outcome: success (the environment's earlier deployments become inactive) or failure. */
  finish(ok: boolean, description: string): Promise<void>;
}

export interface DeploymentRequest {
  /** The commit deployed: the deployment's ref. */
  ref: string;
  /** Why there is no ref, when there is none. */
  noRef: string;
  description: string;
  payload: Record<string, string>;
}

const NOTHING: DeploymentRecord = { finish: async () => {} };
const SKIPPED = 'GitHub deployment not recorded';
/** How long one API call may take. */
const CALL_MS = 10000;
/** How long all the calls of one start, or of one finish, may take together: a run never waits on GitHub longer. */
const BUDGET_MS = 20000;
/** Earlier deployments of the environment looked at for one still active. */
const EARLIER = 10;

/** The environment: as given, else that of the deployment event that started the workflow, else production. */
export function environmentName(
  settings: Pick<DeploymentSettings, 'environment'>,
  env: NodeJS.ProcessEnv,
): string {
  if (settings.environment) return settings.environment;
  if (env.GITHUB_EVENT_NAME === 'deployment' && env.GITHUB_EVENT_PATH) {
    try {
      const event = JSON.parse(readFileSync(env.GITHUB_EVENT_PATH, 'utf8')) as {
        deployment?: { environment?: unknown };
      };
      const name = event.deployment?.environment;
      // Checked as the input is: the event's text reaches the log and GitHub.
      if (typeof name === 'string' && configInputs.environment.schema.safeParse(name).success && name)
        return name;
    } catch {
      // An unreadable event names no environment.
    }
  }
  return 'production';
}

export function runUrl(env: NodeJS.ProcessEnv): string {
  return env.GITHUB_RUN_ID && env.GITHUB_REPOSITORY
    ? `${env.GITHUB_SERVER_URL ?? 'https://github.com'}/${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}`
    : '';
}

/** GitHub's limit on a status description. */
const clip = (text: string) => {
  const line = text.split('\n')[0]!;
  return line.length > 140 ? line.slice(0, 139) + '…' : line;
};

/**
 * Creates the deployment with status in_progress; what it returns records the
 * outcome. Skipped with one notice when off, outside GitHub, without a token or
 * ref, or when GitHub refuses (a token without deployments: write gets 403).
 */
export async function startDeployment(
  settings: DeploymentSettings,
  request: DeploymentRequest,
  log: Log,
  env: NodeJS.ProcessEnv = process.env,
  budgetMs = BUDGET_MS,
): Promise<DeploymentRecord> {
  // Whatever GitHub answers (a body of another shape included), the run goes on.
  const warned = (err: unknown) => log.warn(`${SKIPPED}: ${clip(log.redact(errorMessage(err)))}`);
  try {
    const record = await recordDeployment(settings, request, log, env, budgetMs);
    return {
      finish: (ok, description) => record.finish(ok, description).catch(warned),
    };
  } catch (err) {
    warned(err);
    return NOTHING;
  }
}

/** A call's failure: GitHub's HTTP status, when it answered. */
class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The most of an answer's body read: a listing of eleven deployments is a few kilobytes. */
const BODY_MAX = 1 << 20;

/**
 * One HTTP request with Node's own client, through the runner's proxy when
 * it has one (https_proxy, http_proxy, no_proxy, as @actions/github honoured
 * them: Node's agents read them with proxyEnv). No redirect is followed: the
 * token goes to the API's own host only.
 */
function request(
  url: URL,
  init: { method: string; headers: Record<string, string>; body?: string; signal: AbortSignal },
  env: NodeJS.ProcessEnv,
): Promise<{ status: number; text: string }> {
  const client = url.protocol === 'https:' ? https : http;
  const proxied = ['https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY'].some((k) => env[k]);
  // proxyEnv: Node 24.5 and later (the runner's node24); older ones go direct.
  // The socket's own timeout ends a tunnel its proxy never answers (an abort alone leaves it open).
  const agent = new client.Agent({
    ...(proxied ? { proxyEnv: env } : {}),
    timeout: CALL_MS,
  } as http.AgentOptions);
  return new Promise((resolve, reject) => {
    const req = client.request(url, { method: init.method, headers: init.headers, agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        if (text.length > BODY_MAX) done(() => reject(new Error(`the answer is over ${BODY_MAX} bytes`)));
      });
      res.on('end', () => done(() => resolve({ status: res.statusCode ?? 0, text })));
      res.on('error', (err) => done(() => reject(err)));
    });
    const done = (settle: () => void) => {
      init.signal.removeEventListener('abort', abort);
      req.destroy();
      agent.destroy();
      settle();
    };
    // Settled here on the abort: a request still waiting for its proxy's tunnel reports nothing.
    const abort = () => done(() => reject(init.signal.reason ?? new Error('aborted')));
    req.on('timeout', () => done(() => reject(new Error(`no answer within ${CALL_MS / 1000} s`))));
    req.on('error', (err) => done(() => reject(err)));
    if (init.signal.aborted) return abort();
    init.signal.addEventListener('abort', abort, { once: true });
    req.end(init.body);
  });
}

/**
 * Calls to the repository's deployments endpoints: the body as JSON, the
 * answer's body parsed when it is JSON (as it came otherwise, for the caller's
 * checks); an answer other than 2xx (a redirect too) throws with its status.
 */
function restClient(base: string, token: string, owner: string, repo: string, env: NodeJS.ProcessEnv) {
  const root = `${base.replace(/\/+$/, '')}/repos/${encodeURIComponent(owner)}/${encodeURIComponent(repo)}`;
  return async (
    method: 'GET' | 'POST',
    route: string,
    signal: AbortSignal,
    body?: Record<string, unknown>,
  ): Promise<{ data: unknown }> => {
    const text = body ? JSON.stringify(body) : undefined;
    const res = await request(
      new URL(root + route),
      {
        method,
        headers: {
          accept: 'application/vnd.github+json',
          authorization: `token ${token}`,
          'user-agent': 'metalship',
          'x-github-api-version': '2022-11-28',
          ...(text ? { 'content-type': 'application/json; charset=utf-8' } : {}),
        },
        body: text,
        signal,
      },
      env,
    );
    let data: unknown = res.text;
    try {
      data = JSON.parse(res.text);
    } catch {
      // not JSON: the caller's checks find no id, no list
    }
    if (res.status < 200 || res.status > 299) {
      const message =
        typeof data === 'object' && data !== null && 'message' in data ? String(data.message) : res.text;
      throw new ApiError(`HTTP ${res.status}: ${message.slice(0, 200)}`, res.status);
    }
    return { data };
  };
}

async function recordDeployment(
  settings: DeploymentSettings,
  request: DeploymentRequest,
  log: Log,
  env: NodeJS.ProcessEnv,
  budgetMs: number,
): Promise<DeploymentRecord> {
  if (!settings['github-deployments']) return NOTHING;
  const [owner, repo, ...more] = (env.GITHUB_REPOSITORY ?? '').split('/');
  if (!owner || !repo || more.length) {
    log.notice(
      `${SKIPPED}: not running on GitHub (no GITHUB_REPOSITORY); github-deployments: false turns this off`,
    );
    return NOTHING;
  }
  const token = settings['github-token'];
  if (!token) {
    log.notice(`${SKIPPED}: github-token is empty`);
    return NOTHING;
  }
  if (!request.ref) {
    log.notice(`${SKIPPED}: ${request.noRef}`);
    return NOTHING;
  }
  log.secret(token);
  const api = restClient(env.GITHUB_API_URL || 'https://api.github.com', token, owner, repo, env);
  let refused = false;
  let deadline = Date.now() + budgetMs;
  /** One API call; a failure is reported once and ends the recording, never the deploy. */
  const call = async <T>(what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T | null> => {
    if (refused) return null;
    const left = deadline - Date.now();
    if (left <= 0) {
      refused = true;
      log.warn(`${SKIPPED}: GitHub took over ${budgetMs / 1000} s to answer; ${what} was left out`);
      return null;
    }
    const signal = AbortSignal.timeout(Math.min(CALL_MS, left));
    try {
      return await fn(signal);
    } catch (err) {
      refused = true;
      const status = (err as { status?: unknown }).status;
      if (signal.aborted)
        log.warn(
          `${SKIPPED}: GitHub did not answer within ${Math.round(Math.min(CALL_MS, left) / 100) / 10} s (${what})`,
        );
      else if (status === 403 || status === 404)
        log.notice(
          `${SKIPPED}: the token may not write deployments (HTTP ${status} ${what}); give it deployments: write, or set github-deployments: false`,
        );
      else log.warn(`${SKIPPED}: ${what} failed: ${clip(log.redact(errorMessage(err)))}`);
      return null;
    }
  };
  const environment = environmentName(settings, env);
  const shown = {
    log_url: runUrl(env) || undefined,
    environment_url: settings['environment-url'] || settings.url || undefined,
  };
  const created = await call('creating the deployment', (signal) =>
    api('POST', '/deployments', signal, {
      ref: request.ref,
      environment,
      description: clip(log.redact(request.description)),
      payload: request.payload,
      // The commit was built and tested by the workflow already: no merge, no status checks.
      auto_merge: false,
      required_contexts: [],
      transient_environment: false,
    }),
  );
  const data: unknown = created?.data;
  const id = typeof data === 'object' && data !== null && 'id' in data ? data.id : undefined;
  if (created && typeof id !== 'number') log.warn(`${SKIPPED}: GitHub answered without a deployment id`);
  if (typeof id !== 'number') return NOTHING;
  const status = (
    state: 'in_progress' | 'success' | 'failure' | 'inactive',
    deployment: number,
    extra = {},
  ) =>
    call(`setting deployment ${deployment} ${state}`, (signal) =>
      api('POST', `/deployments/${deployment}/statuses`, signal, { state, ...extra }),
    );
  await status('in_progress', id, { ...shown, description: clip(log.redact(request.description)) });
  log.info(`GitHub deployment ${id} of ${request.ref.slice(0, 12)} to ${environment}: in progress`);
  /**
   * auto_inactive passes over production environments (production_environment,
   * true for the one named production): earlier deployments still reading
   * success are made inactive here.
   */
  const inactivateEarlier = async (id: number): Promise<void> => {
    const listed = await call('listing earlier deployments', (signal) =>
      api(
        'GET',
        `/deployments?${new URLSearchParams({ environment, per_page: String(EARLIER + 1) })}`,
        signal,
      ),
    );
    const earlier: unknown[] = Array.isArray(listed?.data) ? listed.data : [];
    const ids = earlier
      .map((d) => (typeof d === 'object' && d !== null && 'id' in d ? d.id : undefined))
      .filter((d): d is number => typeof d === 'number' && d < id)
      .slice(0, EARLIER);
    // Side by side: the budget bounds them all.
    await Promise.all(
      ids.map(async (earlierId) => {
        const latest = await call(`reading deployment ${earlierId}`, (signal) =>
          api('GET', `/deployments/${earlierId}/statuses?per_page=1`, signal),
        );
        const statuses: unknown = latest?.data;
        const state = Array.isArray(statuses)
          ? (statuses[0] as { state?: unknown } | undefined)?.state
          : undefined;
        if (state === 'success') await status('inactive', earlierId);
      }),
    );
  };
  return {
    async finish(ok, description) {
      deadline = Date.now() + budgetMs;
      // A failure leaves the earlier deployment active: the release it records still serves.
      const done = await status(ok ? 'success' : 'failure', id, {
        ...shown,
        description: clip(log.redact(description)),
        auto_inactive: ok,
      });
      if (!done) return;
      log.info(`GitHub deployment ${id} to ${environment}: ${ok ? 'success' : 'failure'}`);
      if (ok) await inactivateEarlier(id);
    },
  };
}

/**
 * Runs a deploy or rollback and records its outcome on the deployment, thrown
 * errors included. `describe` gets the outcome (null when it threw).
 */
export async function recorded<T extends { failure?: string }>(
  record: DeploymentRecord | Promise<DeploymentRecord>,
  run: () => Promise<T>,
  describe: (outcome: T | null) => string,
): Promise<T> {
  let outcome: T;
  try {
    outcome = await run();
  } catch (err) {
    await (await record).finish(false, describe(null));
    throw err;
  }
  await (await record).finish(!outcome.failure, describe(outcome));
  return outcome;
}
