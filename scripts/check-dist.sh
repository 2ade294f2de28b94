#!/usr/bin/env bash
# GitHub runs the committed dist/, not src/: fail when a fresh build differs.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build >/dev/null
if ! git diff --quiet --exit-code -- dist || [ -n "$(git status --porcelain -- dist)" ]; then
  echo "dist/ is stale: run 'npm run build' and commit dist/." >&2
  git status --short -- dist >&2
  exit 1
fi
echo "dist/ matches a fresh build"
