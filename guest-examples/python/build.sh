#!/bin/sh
# Builds the Python example interceptors into components: ./build.sh [OUT_DIR] (default: dist).
# Needs componentize-py (pip install -r requirements.txt); set COMPONENTIZE_PY to use another one.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/dist}" && cd "${1:-$here/dist}" && pwd)
tool=${COMPONENTIZE_PY:-componentize-py}
for name in drop redact token-budget; do
    (cd "$here/$name" && "$tool" -q -d "$here/../../wit" -w batch-interceptor componentize app \
        -p . -p "$here/sdk" -o "$out/$name.wasm")
    echo "built $out/$name.wasm"
done
