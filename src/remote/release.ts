// Scripts that build a release on a host: claim the directory and reuse
// unchanged files from the previous release, then unpack the new files, build
// (or reuse) the virtualenv, link shared paths, compile and import-check.

import type { Layout } from './layout.js';
import { pyToolDefinition } from './pytool.js';
import { uvicornFlagsScript } from './switch.js';
import { script, sh, writeFileAtomic } from './sh.js';

export const RELEASE_EXISTS_EXIT = 73;

export interface PrepareSettings {
  layout: Layout;
  releaseId: string;
  user: string;
  sharedPaths: string[];
}

/** Where a shared path of the release points: .env to the app's .env, the rest into shared/. */
export function sharedTarget(l: Layout, path: string): string {
  return path === '.env' ? l.env : `${l.shared}/${path}`;
}

/** Creates the app user and tree when missing (idempotent); shared by release and provision. */
export function ensureAppTree(l: Layout, user: string, sharedPaths: string[]): string {
  const dirs = sharedPaths.filter((p) => p !== '.env').map((p) => `${l.shared}/${p}`);
  return script(
    sh`if ! id -u ${user} >/dev/null 2>&1; then`,
    sh`  useradd --system --user-group --home-dir ${l.root} --no-create-home --shell /usr/sbin/nologin ${user}`,
    sh`  echo "changed app user ${user} created"`,
    'fi',
    sh`mkdir -p ${l.releases} ${l.venvs} ${l.slots} ${l.shared} ${l.state} ${l.runDir}`,
    sh`chmod 755 ${l.root} ${l.releases} ${l.venvs} ${l.slots} ${l.runDir}`,
    sh`chmod 700 ${l.state}`,
    dirs.length ? sh`mkdir -p ${dirs}` : null,
    sh`chown ${user}:${user} ${l.shared}`,
    dirs.length ? sh`chown ${user}:${user} ${dirs}` : null,
    sh`chmod 750 ${l.shared}`,
    sh`if [ ! -e ${l.env} ]; then install -m 600 -o ${user} -g ${user} /dev/null ${l.env}; fi`,
  );
}

/**
 * Claims releases/<id> and copies into it every file of the manifest (sent on
 * stdin after the script) that the previous release already has; prints the
 * previous release id and a JSON line with the paths still needed.
 */
export function prepareScript(s: PrepareSettings): string {
  const l = s.layout;
  const rel = l.release(s.releaseId);
  return script(
    pyToolDefinition(),
    ensureAppTree(l, s.user, s.sharedPaths),
    sh`if [ -e ${rel} ]; then echo "release ${s.releaseId} exists already" >&2; exit ${RELEASE_EXISTS_EXIT}; fi`,
    sh`mkdir ${rel} ${rel}/.metalship`,
    sh`echo building > ${rel}/.metalship/status`,
    sh`prev=$(basename "$(readlink ${l.current} 2>/dev/null)" 2>/dev/null || true)`,
    'echo "PREVIOUS ${prev}"',
    // Reuse files from the serving release; on a first deploy there is nothing to reuse.
    sh`base=""; if [ -n "$prev" ] && [ -d ${l.releases}/"$prev" ]; then base=${l.releases}/"$prev"; fi`,
    sh`mstool stage-files ${rel} "$base"`,
  );
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
  importCheck: string | null;
  metadata: Record<string, unknown>;
}

export function buildScript(s: BuildSettings): string {
  const l = s.layout;
  const rel = l.release(s.releaseId);
  const venv = `${l.venvs}/${s.venvKey}`;
  const venvFlags = s.systemSitePackages ? ['--system-site-packages'] : [];
  return script(
    pyToolDefinition(),
    // The upload (on stdin) is unpacked by check-files, not tar: only the manifest's regular files.
    sh`mstool check-files ${rel} ${s.hasUpload ? ['receive'] : []}`,
    // One environment per distinct requirements, built at its final path and never moved.
    sh`if [ ! -f ${venv}/.metalship-complete ]; then`,
    sh`  rm -rf ${venv}`,
    sh`  echo "building virtualenv ${s.venvKey}"`,
    sh`  ${s.python} -m venv ${venvFlags} ${venv}`,
    s.requirements
      ? sh`  PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 ${venv}/bin/python -m pip install --no-input -r ${rel}/${s.requirements} ${s.pipArgs}`
      : null,
    sh`  ${venv}/bin/python -m compileall -q ${venv} >/dev/null 2>&1 || true`,
    sh`  touch ${venv}/.metalship-complete`,
    'else',
    sh`  echo "reusing virtualenv ${s.venvKey}"`,
    'fi',
    sh`mstool link ${venv} ${rel}/.venv`,
    uvicornFlagsScript(rel),
    ...s.sharedPaths.map((p) =>
      script(
        sh`if [ -e ${rel}/${p} ] && [ ! -L ${rel}/${p} ]; then rm -rf ${rel}/${p}; fi`,
        sh`mkdir -p "$(dirname ${rel}/${p})"`,
        sh`mstool link ${sharedTarget(l, p)} ${rel}/${p}`,
      ).trimEnd(),
    ),
    // Bytecode now: the services cannot write it (read-only code, ProtectSystem=strict).
    sh`${venv}/bin/python -m compileall -q -x '/[.]venv/' ${rel} >/dev/null`,
    sh`chmod -R u+rwX,go+rX,go-w ${rel}`,
    s.importCheck
      ? sh`runuser -u ${s.user} -- ${venv}/bin/python -c "$MSTOOL_SRC" import-check ${rel} ${s.importCheck} ${l.env}`
      : null,
    writeFileAtomic(`${rel}/.metalship/release.json`, JSON.stringify(s.metadata, null, 2) + '\n'),
    sh`echo ready > ${rel}/.metalship/status`,
    sh`printf '%s\n' ${`${new Date().toISOString()} release ${s.releaseId} ready (${String(s.metadata.revision || 'no revision')} by ${String(s.metadata.actor || 'unknown')})`} >> ${l.history}`,
  );
}

/** Marks a release failed so that it never becomes current and never counts as a good release. */
export function markScript(l: Layout, releaseId: string, status: 'failed' | 'bad', reason: string): string {
  const rel = l.release(releaseId);
  return script(
    sh`if [ -d ${rel}/.metalship ]; then echo ${status} > ${rel}/.metalship/status; fi`,
    sh`printf '%s\n' ${`${new Date().toISOString()} release ${releaseId} marked ${status}: ${reason.split('\n')[0]?.slice(0, 300) ?? ''}`} >> ${l.history} || true`,
  );
}
