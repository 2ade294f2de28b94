// The bench's Capistrano 3 baseline: the Capfile and config/deploy.rb in
// scripts/bench-capistrano, run by the machine's `cap` (Debian's capistrano
// package) against the bench's test host. The source is pushed to a bare
// repository on the host before each deploy (untimed: it stands for the push to
// GitHub that precedes a deploy); Capistrano clones from there.

import { execFile } from 'node:child_process';
import { cp } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { sshRun, type HostKeyPair, type TestHost } from '../test/support/hosts.js';

const run = promisify(execFile);
const CONFIG = path.join(import.meta.dirname, 'bench-capistrano');
/** The bare repository on the host that Capistrano clones (the "GitHub" of the bench). */
const ORIGIN = '/opt/capbase-origin.git';
/** The nginx port of the Capistrano app (metalship serves on 80, the tarball action on 8080). */
export const CAP_PORT = 8081;
export const CAP_DATABASE = 'capbase';

/** One Capistrano app on the host: its unit (also the application name) and deploy_to. */
export interface CapApp {
  unit: string;
  deployTo: string;
  /** Run the migrations (alembic upgrade head) after deploy:updated. */
  migrate: boolean;
}

export interface CapContext {
  host: TestHost;
  key: HostKeyPair;
  knownHostsFile: string;
  /** The sample app's source directory the bench edits. */
  source: string;
  /** A local directory of the bench's own (the Capistrano config and the source's git dir go there). */
  dir: string;
}

/** Makes sure `cap` is on the machine, installing Debian's capistrano package when it is missing. */
export async function ensureCapistrano(): Promise<void> {
  try {
    await run('cap', ['--version']);
    return;
  } catch {
    process.stderr.write(
      "bench: Capistrano (`cap`) is missing; installing Debian's capistrano package with apt-get for the Capistrano baseline\n",
    );
  }
  try {
    await run('apt-get', ['install', '-y', '-q', 'capistrano'], {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      maxBuffer: 64 << 20,
    });
    await run('cap', ['--version']);
  } catch (err) {
    throw new Error(
      `the Capistrano baseline needs Capistrano 3: \`apt-get install -y capistrano\` failed (run the bench as root on Debian 12, or install it, or leave capistrano and cold out of BENCH_ONLY): ${String(err)}`,
    );
  }
}

/**
 * The app's units as such a deploy has them: the api, and beside it the
 * sample's worker and scheduler (the app shape metalship deploys), each
 * restarted by deploy:restart. Their Redis keys are the app's own (APP_NAME).
 */
function unitsOf(app: CapApp): Record<string, string> {
  const unit = (what: string, command: string, extra = '') => `[Unit]
Description=${app.unit} ${what} (Capistrano baseline)
[Service]
User=www-data
WorkingDirectory=${app.deployTo}/current
EnvironmentFile=${app.deployTo}/shared/.env
Environment=APP_NAME=${app.unit}
ExecStart=${app.deployTo}/shared/venv/bin/python -m ${command}
${extra}Restart=always
[Install]
WantedBy=multi-user.target
`;
  return {
    [app.unit]: unit(
      'api',
      `uvicorn main:app --uds /run/${app.unit}/api.sock`,
      `RuntimeDirectory=${app.unit}\n`,
    ),
    [`${app.unit}-worker`]: unit('worker', 'worker'),
    [`${app.unit}-scheduler`]: unit('scheduler', 'scheduler'),
  };
}

async function onHost(ctx: CapContext, cmd: string): Promise<void> {
  const r = await sshRun(ctx.host, ctx.key, cmd, { idleMs: 120000 });
  if (r.code !== 0) throw new Error(`${cmd}: ${r.stderr}`);
}

function gitDir(ctx: CapContext): string {
  return path.join(ctx.dir, 'capistrano-source.git');
}

async function git(ctx: CapContext, ...args: string[]): Promise<string> {
  const sshCommand = `ssh -F /dev/null -i ${ctx.key.privateKeyPath} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=${ctx.knownHostsFile} -p ${ctx.host.port}`;
  return (
    await run(
      'git',
      [
        `--git-dir=${gitDir(ctx)}`,
        `--work-tree=${ctx.source}`,
        '-c',
        'user.name=bench',
        '-c',
        'user.email=bench@example.test',
        ...args,
      ],
      { env: { ...process.env, GIT_SSH_COMMAND: sshCommand } },
    )
  ).stdout;
}

/**
 * Once per bench run: the Capistrano config in the bench's dir, the source's git
 * dir, and on the host the bare repository, the database, and for `app` its
 * unit, shared .env and nginx site on CAP_PORT. The www-data role exists already.
 */
export async function capSetup(ctx: CapContext, app: CapApp): Promise<void> {
  await cp(CONFIG, path.join(ctx.dir, 'capistrano'), { recursive: true });
  await git(ctx, 'init', '-q');
  await onHost(
    ctx,
    `set -e; git init -q --bare ${ORIGIN}; ` +
      `runuser -u postgres -- createdb -O www-data ${CAP_DATABASE}; ` +
      `cat > /etc/nginx/sites-enabled/${app.unit} <<'EOF'\nserver {\n    listen ${CAP_PORT};\n    location / { proxy_pass http://unix:/run/${app.unit}/api.sock; }\n}\nEOF\n` +
      `nginx -t -q && systemctl reload nginx`,
  );
  await capPrepare(ctx, app);
}

/** What is there before a first deploy: the units and the shared .env (deploy:check wants linked_files). */
export async function capPrepare(ctx: CapContext, app: CapApp): Promise<void> {
  await onHost(
    ctx,
    `set -e; mkdir -p ${app.deployTo}/shared; ` +
      `printf 'REDIS_URL=redis://127.0.0.1:6379/3\\nDATABASE_URL=postgresql:///${CAP_DATABASE}\\n' > ${app.deployTo}/shared/.env; ` +
      Object.entries(unitsOf(app))
        .map(([name, text]) => `cat > /etc/systemd/system/${name}.service <<'EOF'\n${text}EOF\n`)
        .join('') +
      `systemctl daemon-reload`,
  );
}

/** Commits the source as it is and pushes it to the host's bare repository (untimed: the push to GitHub). */
export async function capPush(ctx: CapContext, message: string): Promise<void> {
  await git(ctx, 'add', '-A');
  await git(ctx, 'commit', '-q', '--allow-empty', '-m', message);
  await git(ctx, 'push', '-q', '-f', `root@${ctx.host.address}:${ORIGIN}`, 'HEAD:refs/heads/main');
}

/** `cap production <task>` for app; resolves with cap's log (Airbrussh: each task, command and its duration). */
export async function cap(ctx: CapContext, app: CapApp, task: 'deploy' | 'deploy:rollback'): Promise<string> {
  try {
    const r = await run('cap', ['production', task], {
      cwd: path.join(ctx.dir, 'capistrano'),
      maxBuffer: 64 << 20,
      env: {
        ...process.env,
        CAP_HOST: ctx.host.address,
        CAP_PORT: String(ctx.host.port),
        CAP_KEY: ctx.key.privateKeyPath,
        CAP_KNOWN_HOSTS: ctx.knownHostsFile,
        CAP_REPO: `file://${ORIGIN}`,
        CAP_UNIT: app.unit,
        CAP_DEPLOY_TO: app.deployTo,
        CAP_MIGRATE: app.migrate ? '1' : '0',
        CAP_DATABASE_URL: `postgresql:///${CAP_DATABASE}`,
      },
    });
    return r.stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`cap production ${task} failed:\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}
