#!/usr/bin/env bash
# The whole test suite: static checks, unit tests, a fresh build of the bundles
# compared with the committed dist/, and the e2e tests against real test hosts
# (systemd-nspawn; needs root). Timings print at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export NODE_OPTIONS=--experimental-vm-modules
t0=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - t0 ))"; }

step typecheck
npx tsc --noEmit
step lint
npx eslint --max-warnings 0 .
npx prettier --check . >/dev/null || { npx prettier --check .; exit 1; }
step "shellcheck and pyflakes (shell files, generated scripts, Python)"
npx tsx scripts/lint-scripts.ts
step "actionlint (action metadata and workflows)"
bash scripts/actionlint.sh
step "unit tests"
npx jest --selectProjects unit
step "bundles: fresh build must match the committed dist/"
bash scripts/check-dist.sh
step "e2e tests on real test hosts"
npx jest --selectProjects e2e
step "done"
