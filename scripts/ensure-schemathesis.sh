#!/usr/bin/env bash
# Prints the path of a `schemathesis` (PyPI, pinned) for the OpenAPI e2e test
# (tests/tests/openapi.rs), installing it into target/tools/schemathesis-venv
# on first use. Fails loudly when it cannot be installed.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/tools/schemathesis-venv"
version="4.32.5"
bin="$venv/bin/schemathesis"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "$bin"
  exit 0
fi
echo "ensure-schemathesis: installing schemathesis==$version (PyPI) into $venv" >&2
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$version" >&2
"$bin" --version >&2
echo "$bin"
