#!/bin/sh
# Builds {{name}}.wasm from interceptor.js. The first run installs the pinned toolchain
# (package-lock.json) into node_modules.
set -eu
cd "$(dirname "$0")"
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run --silent build
echo "built {{name}}.wasm"
