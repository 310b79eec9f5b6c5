#!/bin/sh
# Builds the Python example interceptors into components: ./build.sh [OUT_DIR] (default: dist).
# Needs componentize-py (pip install -r requirements.txt); set COMPONENTIZE_PY to use another one.
# `drop` is a batch-world interceptor; the guards over text are text-world ones.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/dist}" && cd "${1:-$here/dist}" && pwd)
tool=${COMPONENTIZE_PY:-componentize-py}
for entry in drop:batch-interceptor redact:text-interceptor deny-phrases:text-interceptor \
    token-budget:text-interceptor bsn:text-interceptor; do
    name=${entry%%:*}
    world=${entry#*:}
    # The entry module: the author's `app` for the batch world; for the text world the SDK's
    # glue, `text` (it defines the interface's functions and imports `app`).
    entry_module=app
    [ "$world" = text-interceptor ] && entry_module=text
    (cd "$here/$name" && "$tool" -q -d "$here/../../wit" -w "$world" componentize "$entry_module" \
        -p . -p "$here/sdk" -o "$out/$name.wasm")
    echo "built $out/$name.wasm"
done
