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
# Every e2e file on Debian 12; the main flows (provision converging twice,
# a deploy under load, rollback, migrate, backup-verify) again on Debian 11 and
# 13, which bracket Ubuntu 22.04 and 24.04. METALSHIP_RELEASES narrows the
# matrix for a local run (e.g. METALSHIP_RELEASES=bookworm).
MAIN_FLOWS=(test/e2e/provision.test.ts test/e2e/deploy.test.ts test/e2e/migrate.test.ts test/e2e/backup-verify.test.ts)
declare -A took=()
for release in ${METALSHIP_RELEASES:-bookworm bullseye trixie}; do
  r0=$(date +%s)
  if [ "$release" = bookworm ]; then
    step "e2e tests on real test hosts: Debian 12 (bookworm), every file"
    METALSHIP_DEBIAN=bookworm npx jest --selectProjects e2e
  else
    step "e2e tests on real test hosts: $release, the main flows"
    METALSHIP_DEBIAN=$release npx jest --selectProjects e2e "${MAIN_FLOWS[@]}"
  fi
  took[$release]=$(( $(date +%s) - r0 ))
done
step "done"
for release in "${!took[@]}"; do printf 'e2e on %s: %s s\n' "$release" "${took[$release]}"; done
