// Scripts that build a release on a host: claim the directory and reuse
// unchanged files from the previous release, then unpack the new files, build
// (or reuse) the virtualenv, link shared paths, compile and import-check.

import { BUILD_UNIT_PREFIX, PIP_RUNNER_ROOT, type Layout } from './layout.js';
import { rootOnly, STATE_MODE } from './paths.js';
import { pyToolDefinition } from './pytool.js';
import { runtimePath } from './runtime.js';
import { plainStep, step, type Step } from './step.js';
import { stopStandbyLines, uvicornFlagsScript } from './switch.js';
import { heredoc, keyLines, raw, script, sh, writeFileAtomic } from './sh.js';

export const RELEASE_EXISTS_EXIT = 73;

/** The code of a release, read on the runner: every file with its hash and mode, every link. */
export interface Manifest {
  /** [path, sha256, mode (octal text), size] */
  files: [string, string, string, number][];
  /** [path, link target] */
  links: [string, string][];
}

export interface PrepareSettings {
  layout: Layout;
  releaseId: string;
  user: string;
  sharedPaths: string[];
  /** A switch follows in this run: the api slot it will start the release in stops now (see stopStandbyLines). */
  stopStandby?: boolean;
}

/** Where a shared path of the release points: into shared/ (.env is the release's own, see releaseEnvScript). */
export function sharedTarget(l: Layout, path: string): string {
  return `${l.shared}/${path}`;
}

/** Creates a system user without login when missing (prints `changed` when it did). */
function ensureUser(user: string, home: string, what: string, comment = ''): string {
  return script(
    sh`if ! id -u ${user} >/dev/null 2>&1; then`,
    sh`  useradd --system --user-group --home-dir ${home} --no-create-home --shell /usr/sbin/nologin --comment ${comment} ${user}`,
    sh`  echo ${`changed ${what} ${user} created`}`,
    'fi',
  ).trimEnd();
}

/**
 * The build user: made by us and marked so. Its processes are killed before and
 * after every build, so a user of that name that is anything else (another
 * app's user, someone's account) is refused rather than used.
 */
function ensureBuildUser(l: Layout): string {
  const mark = `metalship build user of ${l.app}`;
  return script(
    ensureUser(l.buildUser, '/nonexistent', 'build user', mark),
    sh`if [ "$(getent passwd ${l.buildUser} | cut -d: -f5)" != ${mark} ]; then echo ${`the user ${l.buildUser} exists and is not metalship's build user of ${l.app} (its comment is not '${mark}'): rename it, or choose another app name`} >&2; exit 1; fi`,
  ).trimEnd();
}

/**
 * Creates the app user, the build user and the tree when missing (idempotent);
 * shared by release and provision. Root owns the tree; shared/ is the app's,
 * and what lies below it is made by the app user, never chowned by root (the
 * app could have planted a link there to a directory root would then hand over).
 */
export function ensureAppTree(layout: Layout, user: string, sharedPaths: string[]): string {
  const dirs = sharedPaths.filter((p) => p !== '.env').map((p) => `${layout.shared}/${p}`);
  const own = [layout.releases, layout.venvs, layout.slots, layout.state, layout.runDir];
  return script(
    rootOnly(layout.root, ...own),
    ensureUser(user, layout.root, 'app user'),
    ensureBuildUser(layout),
    sh`mkdir -p ${own} ${layout.shared}`,
    sh`chmod 755 ${layout.root} ${layout.releases} ${layout.venvs} ${layout.slots} ${layout.runDir}`,
    sh`chmod ${STATE_MODE} ${layout.state}`,
    sh`if [ -L ${layout.shared} ] || [ ! -d ${layout.shared} ]; then echo ${`${layout.shared} is not a directory`} >&2; exit 1; fi`,
    sh`chown -h ${user}:${user} ${layout.shared}`,
    sh`chmod 750 ${layout.shared}`,
    dirs.length ? sh`runuser -u ${user} -- mkdir -p -- ${dirs}` : null,
    sh`if [ ! -e ${layout.env} ]; then install -m 600 -o ${user} -g ${user} /dev/null ${layout.env}; fi`,
  );
}

/**
 * Claims releases/<id> and copies into it every file of the manifest (sent on
 * stdin after the script) that the previous release already has; prints the
 * previous release id and a JSON line with the paths still needed.
 */
export function prepareStep(settings: PrepareSettings, manifest: Manifest): Step<Prepared> {
  const layout = settings.layout;
  const rel = layout.release(settings.releaseId);
  const text = script(
    pyToolDefinition(),
    ensureAppTree(layout, settings.user, settings.sharedPaths),
    sh`if [ -e ${rel} ]; then echo "release ${settings.releaseId} exists already" >&2; exit ${RELEASE_EXISTS_EXIT}; fi`,
    settings.stopStandby ? stopStandbyLines(layout) : null,
    sh`mkdir ${rel} ${rel}/.metalship`,
    sh`echo building > ${rel}/.metalship/status`,
    sh`prev=$(basename "$(readlink ${layout.current} 2>/dev/null)" 2>/dev/null || true)`,
    'echo "PREVIOUS ${prev}"',
    // Reuse files from the serving release; on a first deploy there is nothing to reuse.
    sh`base=""; if [ -n "$prev" ] && [ -d ${layout.releases}/"$prev" ]; then base=${layout.releases}/"$prev"; fi`,
    sh`mstool stage-files ${rel} "$base"`,
  );
  return step('preparing the release directory', text, (stdout) => parsePrepared(stdout, manifest));
}

export interface Prepared {
  previous: string;
  need: string[];
  reused: number;
}

/**
 * What the prepare script printed: the previous release and the files the host
 * still needs. The host writes it, so a compromised host writes it too: it must
 * never choose what the runner reads and sends, so every path must be a file
 * of the manifest, once, or nothing is sent.
 */
function parsePrepared(stdout: string, manifest: Manifest): Prepared {
  const previous = keyLines(stdout).get('PREVIOUS')?.trim() ?? '';
  if (previous && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(previous))
    throw new Error(
      `the host named its current release ${JSON.stringify(previous.slice(0, 100))}, not a release id`,
    );
  let answer: unknown;
  try {
    answer = JSON.parse(stdout.trim().split('\n').pop() ?? '');
  } catch {
    answer = null;
  }
  const { need, reused } = (answer ?? {}) as { need?: unknown; reused?: unknown };
  if (!Array.isArray(need) || typeof reused !== 'number' || !Number.isInteger(reused))
    throw new Error(
      'the host did not answer which files it needs ({"need": [paths], "reused": n} expected); nothing was sent to it',
    );
  const files = new Set(manifest.files.map((f) => f[0]));
  const seen = new Set<string>();
  for (const p of need as unknown[]) {
    if (typeof p !== 'string' || !files.has(p))
      throw new Error(
        `the host asked for ${JSON.stringify(p)}, which is not a file of the manifest: refused, nothing was sent to it`,
      );
    if (seen.has(p))
      throw new Error(`the host asked for ${JSON.stringify(p)} twice: refused, nothing was sent to it`);
    seen.add(p);
  }
  if (reused !== files.size - seen.size)
    throw new Error(
      `the host claims to reuse ${reused} files and to need ${seen.size} of ${files.size}: refused, nothing was sent to it`,
    );
  return { previous, need: [...seen], reused };
}

export interface BuildSettings {
  layout: Layout;
  releaseId: string;
  user: string;
  hasUpload: boolean;
  python: string;
  venvKey: string;
  requirements: string;
  pipArgs: string[];
  systemSitePackages: boolean;
  sharedPaths: string[];
  /** The release's own .env text; '' copies the app's shared .env instead. */
  env: string;
  importCheck: string | null;
  metadata: Record<string, unknown>;
  /** The runtime record (src/inputs/runtime.ts): the settings the release runs with. */
  runtimeRecord: string;
}

/**
 * Builds a virtualenv at its final path, as the build user: pip runs the build
 * code of every package (setup.py, build backends), which must run neither as
 * root nor as the app. Each step is a transient systemd unit: the build user,
 * no new privileges, a private /tmp, everything read-only but the venv, its
 * pip cache and a copy of the release (local requirements build in place), and
 * when it ends nothing of it is left running. Then root seals the venv: root's,
 * read-only, no set-id bits, and nothing in it may lead to a place another
 * user could change.
 */
function venvScript(settings: BuildSettings): string {
  const layout = settings.layout;
  const rel = layout.release(settings.releaseId);
  const user = layout.buildUser;
  const cacheRoot = layout.pipCache.replace(/\/[^/]+$/, '');
  const venvFlags = settings.systemSitePackages ? ['--system-site-packages'] : [];
  const sandbox = [
    `User=${user}`,
    `Group=${user}`,
    'NoNewPrivileges=yes',
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'RestrictSUIDSGID=yes',
  ].flatMap((p) => ['-p', p]);
  return script(
    sh`venv=${`${layout.venvs}/${settings.venvKey}`}`,
    // Complete only when sealed: a marker the build itself may have planted does not count.
    'if [ -f "$venv/.metalship-complete" ] && [ "$(stat -c %u -- "$venv")" = 0 ]; then',
    sh`  echo "reusing virtualenv ${settings.venvKey}"`,
    'else',
    sh`  echo "building virtualenv ${settings.venvKey} as ${user}"`,
    // What an interrupted build left is stopped first.
    sh`  mstool stop-user ${user}`,
    '  rm -rf -- "$venv"',
    sh`  install -d -m 755 -o ${user} -g ${user} "$venv"`,
    sh`  install -d -m 755 ${cacheRoot}`,
    sh`  install -d -m 700 -o ${user} -g ${user} ${layout.pipCache}`,
    sh`  find ${cacheRoot} -maxdepth 1 -name 'build.*' -exec rm -rf -- {} +`,
    sh`  work=$(mktemp -d ${cacheRoot + '/build.XXXXXX'})`,
    sh`  tar -C ${rel} --exclude=./.metalship -cf - . | tar -C "$work" -xf - --no-same-owner`,
    sh`  chown -R ${user}:${user} "$work"`,
    // The unit's environment from a root-only file (a proxy URL may hold a
    // password: never on a command line), quoted as systemd reads it.
    '  envfile=$(mktemp)',
    '  ms_env() { local v=$2 bs="\\\\" q=\'"\' d=\'$\' bt=\'`\'; v=${v//"$bs"/"$bs$bs"}; v=${v//"$q"/"$bs$q"}; v=${v//"$d"/"$bs$d"}; v=${v//"$bt"/"$bs$bt"}; printf \'%s="%s"\\n\' "$1" "$v" >> "$envfile"; }',
    sh`  ms_env HOME "$work"; ms_env LANG C.UTF-8; ms_env PIP_CACHE_DIR ${layout.pipCache}`,
    '  ms_env PIP_DISABLE_PIP_VERSION_CHECK 1; ms_env PIP_NO_INPUT 1',
    '  for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do if [ -n "${!v:-}" ]; then ms_env "$v" "${!v}"; fi; done',
    '  step=0',
    sh`  as_build() { step=$((step + 1)); systemd-run --quiet --wait --pipe --collect --unit="${raw(BUILD_UNIT_PREFIX)}\${__metalship_token:-$$}-$step" ${sandbox} -p EnvironmentFile="$envfile" -p ReadWritePaths="$venv $work ${raw(layout.pipCache)}" --working-directory="$work" -- "$@" < /dev/null; }`,
    // No pip copied into the venv (ensurepip's 2 s): pip runs from root's
    // unpacked, compiled copy of the interpreter's own wheel (mstool pip-runner),
    // else (no such wheel, or it could not be unpacked) from the pip ensurepip
    // puts in the venv, as before. So a venv has no pip of its own: it is
    // sealed, and nothing is installed into it after its build.
    settings.requirements
      ? script(
          sh`  mapfile -t found < <(${settings.python} -I -c "$MSTOOL_SRC" pip-runner ${PIP_RUNNER_ROOT} ${settings.systemSitePackages ? ['system-site'] : []} || true)`,
          '  runner=${found[0]:-}',
          sh`  if [ -n "$runner" ]; then as_build ${settings.python} -m venv ${venvFlags} --without-pip "$venv"; else as_build ${settings.python} -m venv ${venvFlags} "$venv"; fi`,
        ).trimEnd()
      : sh`  as_build ${settings.python} -m venv ${venvFlags} --without-pip "$venv"`,
    "  echo 'MARK virtualenv created'",
    settings.requirements
      ? script(
          // ensurepip gave a venv setuptools too before Python 3.12 (sdists built
          // without build isolation, code importing pkg_resources): so does this,
          // but where the venv sees the system's. As ensurepip, not reading
          // pip's settings (a constraint on setuptools is for the app's).
          '  if [ "${#found[@]}" -gt 1 ]; then as_build "$venv/bin/python" "$runner/pip" install --isolated --no-input --no-index --no-deps "${found[@]:1}" >/dev/null; fi',
          '  if [ -n "$runner" ]; then pip=("$runner/pip"); else pip=(-m pip); fi',
          sh`  as_build "$venv/bin/python" "\${pip[@]}" install --no-input -r ${settings.requirements} ${settings.pipArgs}`,
          "  echo 'MARK requirements installed'",
        ).trimEnd()
      : null,
    // Bytecode on every core (-j 0): the services cannot write it later.
    '  as_build "$venv/bin/python" -m compileall -q -j 0 "$venv" >/dev/null 2>&1 || true',
    sh`  mstool stop-user ${user}`,
    '  rm -f -- "$envfile"',
    '  rm -rf -- "$work"',
    '  rm -f -- "$venv/.metalship-complete"',
    '  chown -hR root:root -- "$venv"',
    '  chmod -R u+rwX,go+rX,go-w,ug-s -- "$venv"',
    // An editable install (-e) points into the build's copy, gone now. Searched once
    // the venv is root's, in regular files only: a link or a FIFO a package planted
    // is never opened by root (a FIFO would hang the deploy, which holds the lock).
    '  editable=$(find "$venv"/lib/python*/site-packages -maxdepth 1 -type f \\( -name "*.pth" -o -name "*.egg-link" -o -name "__editable__*" \\) -exec grep -lsF -- "$work" {} + 2>/dev/null || true)',
    `  if [ -n "$editable" ]; then echo "the requirements install a package in editable mode (-e): a release is read-only, so install it normally ('.' instead of '-e .')" >&2; exit 1; fi`,
    '  mstool check-sealed "$venv"',
    '  touch -- "$venv/.metalship-complete"',
    "  echo 'MARK virtualenv sealed'",
    'fi',
  );
}

/**
 * The release's own .env, which every process of the release reads (the
 * services, migrations, the import check): the deploy's env, or else a copy of
 * the app's shared .env as it is now, so that a later change to the shared one
 * reaches the services only through a new release, and a rollback brings back
 * the env that served. The app user's, mode 600 from its first byte (the
 * release directory is world-readable), in a directory only root can write:
 * the app user can change what it says but never where it points. The shared
 * one is read as the app user, whose file it is.
 */
function releaseEnvScript(rel: string, layout: Layout, user: string, env: string): string {
  const tmp = `${rel}/.env.metalship-tmp`;
  const doc = heredoc(env);
  return script(
    sh`rm -rf -- ${tmp} ${rel}/.env`,
    env
      ? script(sh`(umask 077 && cat > ${tmp}) ${raw(doc.open)}`, doc.body).trimEnd()
      : sh`(umask 077 && runuser -u ${user} -- cat -- ${layout.env} > ${tmp})`,
    sh`chown ${user}:${user} ${tmp}`,
    sh`mv -f -- ${tmp} ${rel}/.env`,
  ).trimEnd();
}

export function buildStep(settings: BuildSettings): Step<void> {
  const layout = settings.layout;
  const rel = layout.release(settings.releaseId);
  return plainStep(
    `building release ${settings.releaseId}`,
    script(
      pyToolDefinition(),
      // The upload (on stdin) is unpacked by check-files, not tar: only the manifest's regular files.
      sh`mstool check-files ${rel} ${settings.hasUpload ? ['receive'] : []}`,
      "echo 'MARK files in place'",
      // One environment per distinct requirements, built at its final path and never moved.
      venvScript(settings),
      // Bytecode now (the services cannot write it: read-only code, ProtectSystem=strict),
      // before the links, so root reads only the release's own files, with the
      // base interpreter (isolated): the venv's packages never run as root. On
      // every core only for a large tree: the worker pool costs more than it
      // saves on a few dozen files.
      sh`if [ "$(find ${rel} -name '*.py' -not -path ${`${rel}/.venv/*`} | head -n 500 | wc -l)" -ge 500 ]; then jobs=0; else jobs=1; fi`,
      sh`${settings.python} -I -m compileall -q -j "$jobs" -x '/[.]venv/' ${rel} >/dev/null`,
      "echo 'MARK bytecode compiled'",
      ...settings.sharedPaths
        .filter((p) => p !== '.env')
        .map((p) =>
          script(
            sh`if [ -e ${rel}/${p} ] && [ ! -L ${rel}/${p} ]; then rm -rf ${rel}/${p}; fi`,
            sh`mkdir -p "$(dirname ${rel}/${p})"`,
          ).trimEnd(),
        ),
      // The venv and the shared paths in one run of the tool (each run is an interpreter's start).
      sh`mstool link "$venv" ${rel}/.venv ${settings.sharedPaths
        .filter((p) => p !== '.env')
        .flatMap((p) => [sharedTarget(layout, p), `${rel}/${p}`])}`,
      uvicornFlagsScript(rel, settings.user, raw('"$venv"')),
      sh`chmod -R u+rwX,go+rX,go-w,ug-s ${rel}`,
      releaseEnvScript(rel, layout, settings.user, settings.env),
      settings.importCheck
        ? script(
            importCheckLine(rel, settings.user, settings.importCheck),
            "echo 'MARK the app imports'",
          ).trimEnd()
        : null,
      writeFileAtomic(`${rel}/.metalship/release.json`, JSON.stringify(settings.metadata, null, 2) + '\n'),
      writeFileAtomic(runtimePath(layout, settings.releaseId), settings.runtimeRecord),
      sh`echo ready > ${rel}/.metalship/status`,
      sh`printf '%s\n' ${`${new Date().toISOString()} release ${settings.releaseId} ready (${String(settings.metadata.revision || 'no revision')} by ${String(settings.metadata.actor || 'unknown')})`} >> ${layout.history}`,
    ),
  );
}

/**
 * Imports the app module with the release's interpreter, as the app user and
 * with the release's .env, so that a release that cannot start fails before it
 * is switched to or migrates anything (needs pyToolDefinition).
 */
export function importCheckLine(rel: string, user: string, appModule: string): string {
  return sh`runuser -u ${user} -- ${rel}/.venv/bin/python -I -c "$MSTOOL_SRC" import-check ${rel} ${appModule} ${`${rel}/.env`}`;
}

/** Marks a release failed so that it never becomes current and never counts as a good release. */
export function markStep(
  layout: Layout,
  releaseId: string,
  status: 'failed' | 'bad',
  reason: string,
): Step<void> {
  const rel = layout.release(releaseId);
  return plainStep(
    `marking ${releaseId} ${status}`,
    script(
      sh`if [ -d ${rel}/.metalship ]; then echo ${status} > ${rel}/.metalship/status; fi`,
      sh`printf '%s\n' ${`${new Date().toISOString()} release ${releaseId} marked ${status}: ${reason.split('\n')[0]?.slice(0, 300) ?? ''}`} >> ${layout.history} || true`,
    ),
  );
}
