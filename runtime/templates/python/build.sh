#!/bin/sh
# Builds {{name}}.wasm from app.py. The first run installs componentize-py into .venv.
set -eu
cd "$(dirname "$0")"
if [ ! -x .venv/bin/componentize-py ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q -r requirements.txt
fi
.venv/bin/componentize-py -q -d wit -w {{world}} componentize {{entry}} -p . -o {{name}}.wasm
echo "built {{name}}.wasm"
