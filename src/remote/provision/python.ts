// Python: the distribution's python3 (with venv and pip), or a pyenv build in
// /opt/pyenv. Prints `python <path>`: the interpreter the release action builds
// each release's venv with (the venvs live in {app-root}/venvs, {app-root}/venv
// links the current one).

import { PIP_RUNNER_ROOT } from '../layout.js';
import { pyToolDefinition } from '../pytool.js';
import { raw, sh, type Raw } from '../sh.js';
import { itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

export const PYENV_ROOT = '/opt/pyenv';
export const PYENV_REPO = 'https://github.com/pyenv/pyenv.git';
/** What CPython needs to build (pyenv's wiki, Debian and Ubuntu). */
export const PYENV_BUILD_DEPS = [
  'git',
  'make',
  'build-essential',
  'libssl-dev',
  'zlib1g-dev',
  'libbz2-dev',
  'libreadline-dev',
  'libsqlite3-dev',
  'libncursesw5-dev',
  'xz-utils',
  'tk-dev',
  'libxml2-dev',
  'libxmlsec1-dev',
  'libffi-dev',
  'liblzma-dev',
];

/**
 * pip unpacked and compiled for the interpreter now (mstool pip-runner), so
 * that the first deploy's venv does not wait for it. A cache: a failure here
 * only leaves it to the deploy.
 */
function pipRunnerLines(python: string | Raw): string {
  return [
    pyToolDefinition(),
    sh`if [ "$CHECK" != 1 ]; then ${python} -I -c "$MSTOOL_SRC" pip-runner ${PIP_RUNNER_ROOT} >/dev/null || true; fi`,
  ].join('\n');
}

export function pythonItem(settings: ProvisionSettings): Item {
  const v = settings.python.version;
  if (settings.python.install === 'system') {
    const matches = v
      ? sh`have=$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
case "$have." in ${v}.*) ;; *) echo "python3 is $have, python-version asks for ${v}: use python-install: pyenv for another version" >&2; exit 1;; esac`
      : null;
    return {
      name: 'python',
      precheck: matches ? `if command -v python3 >/dev/null; then\n${matches}\nfi` : undefined,
      script: itemScript(
        settings.check,
        'ms_install python3 python3-venv python3-pip',
        matches,
        pipRunnerLines('/usr/bin/python3'),
        'echo "python /usr/bin/python3"',
      ),
    };
  }
  return {
    name: 'python',
    script: itemScript(
      settings.check,
      `ms_install ${PYENV_BUILD_DEPS.join(' ')}`,
      sh`export PYENV_ROOT=${PYENV_ROOT}`,
      sh`if [ ! -x ${PYENV_ROOT}/bin/pyenv ]; then`,
      sh`  ms_changed ${'pyenv installed in ' + PYENV_ROOT}`,
      '  if [ "$CHECK" = 1 ]; then exit 0; fi',
      sh`  git clone --quiet --depth 1 ${PYENV_REPO} ${PYENV_ROOT} >&2`,
      'fi',
      // A version such as 3.12 means the newest 3.12.x pyenv knows.
      sh`full=$(${PYENV_ROOT}/bin/pyenv latest -k ${v} 2>/dev/null || echo ${v})`,
      sh`if [ ! -x ${PYENV_ROOT}/versions/"$full"/bin/python3 ]; then`,
      '  ms_changed "Python $full built with pyenv"',
      '  if [ "$CHECK" = 1 ]; then exit 0; fi',
      sh`  ${PYENV_ROOT}/bin/pyenv install --skip-existing "$full" >&2`,
      'fi',
      sh`chmod -R go+rX,go-w ${PYENV_ROOT}`,
      pipRunnerLines(raw(`${sh`${PYENV_ROOT}/versions/`}"$full"/bin/python3`)),
      sh`echo "python ${PYENV_ROOT}/versions/$full/bin/python3"`,
    ),
  };
}
